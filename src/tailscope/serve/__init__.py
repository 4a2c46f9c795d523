"""Serve the logit path of a model pair to the tools people already use.

* :class:`Engine` — queues requests and decodes those queued together as one batch of the one
  decoding loop (:class:`~tailscope.sampling.PathSampler`), replies streamed as they are drawn;
* :func:`create_app` — the OpenAI-compatible HTTP API over an engine (``tailscope[serve]``);
* :class:`BackgroundServer` — that API under uvicorn on a background thread (tests, notebooks);
* the inspect_ai provider ``tailscope/<organism>`` (registered through inspect_ai's entry point).

See docs/serve.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._engine import Engine
from ._errors import ServeError
from ._jobs import Choice, Completion, GenerationSpec

__all__ = ["BackgroundServer", "Choice", "Completion", "Engine", "GenerationSpec", "ServeError", "create_app"]

_LAZY = {"create_app": "._app", "BackgroundServer": "._run"}  # need the `serve` extra: imported on use


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'tailscope.serve' has no attribute {name!r}")
