"""inspect_ai's entry point: registers the ``tailscope`` model provider (loaded only when used)."""

from inspect_ai.model import modelapi


@modelapi(name="tailscope")
def tailscope():
    from ._inspect import TailscopeAPI

    return TailscopeAPI
