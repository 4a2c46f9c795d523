"""`tailscope serve`: an OpenAI-compatible server for a point of the logit path between two models."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import console, fail, use_threads
from ._errors import loading


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pair_name(reference: str, target: str) -> str:
    return f"{Path(reference).name or reference}..{Path(target).name or target}"


def serve(
    organism: Optional[str] = opt.organism(),
    reference: Optional[str] = opt.reference(),
    target: Optional[str] = opt.target(),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Default path point l_A + α (l_B − l_A); a request may set its own `alpha`."),
    amplify: Optional[float] = typer.Option(None, "--amplify", help="Default LDA amplification a: α = 1 + a."),
    name: Optional[str] = typer.Option(None, "--name", help="The model id clients send (default: the organism's name, or REFERENCE..TARGET)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback should have --api-key."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port; the address is printed)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="TAILSCOPE_API_KEY", help="Require `Authorization: Bearer KEY` on every /v1 request."),
    max_new_tokens: Optional[int] = opt.max_new_tokens(),
    batch_size: int = opt.batch_size(32),
    seed: int = opt.seed(),
    device: str = opt.device(),
    dtype: str = opt.dtype(),
    trust_remote_code: bool = opt.trust_remote_code(),
    threads: Optional[int] = opt.threads(),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level (info logs every request)."),
) -> None:
    """Serve the path model over the OpenAI API: /v1/models, /v1/completions, /v1/chat/completions.

    A request's reply limit defaults to --max-new-tokens; its `alpha` (or `amplify`) extra body field
    moves it along the path. See docs/serve.md."""
    from ._errors import check_device, check_dtype
    from ._setup import load_pair, organism_card

    if alpha is not None and amplify is not None:
        raise fail("give one of --alpha or --amplify")
    if organism and (reference or target):
        raise fail("give --organism or --reference/--target, not both")
    if not organism and not (reference and target):
        raise fail("give --reference and --target (or --organism NAME)")
    check_device(device)
    check_dtype(dtype)
    try:
        from ..serve import Engine, create_app
        from ..serve._run import bind, run_server, url_of
    except ImportError as e:
        raise fail(str(e)) from None
    if not _is_loopback(host) and not api_key:
        console.print(f"[yellow]warning:[/] listening on {host} without --api-key: anyone who can reach it can use it")
    if organism:
        card = organism_card(organism)
    try:
        sock = bind(host, port)
    except OSError as e:
        raise fail(str(e)) from None
    try:
        use_threads(threads)
        if organism:
            from ..organisms import load

            with console.status(f"loading organism {organism}"), loading(organism, "--organism"):
                pair = load(organism, device=device, dtype=dtype).pair
            default_name, default_tokens = organism, int(card["max_new_tokens"])
        else:
            with console.status(f"loading {reference} and {target}"):
                pair = load_pair(reference, target, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            default_name, default_tokens = _pair_name(reference, target), 64
        point = 1.0 + amplify if amplify is not None else (alpha if alpha is not None else 1.0)
        try:
            engine = Engine(pair, name=name or default_name, alpha=point, max_tokens=max_new_tokens or default_tokens,
                            batch_size=batch_size, seed=seed)
        except ValueError as e:
            raise fail(str(e)) from None
        url = url_of(sock)
        app = create_app(engine, api_key=api_key)
        console.print(f"loaded {pair!r}", soft_wrap=True)

        def started() -> None:
            console.print(f"serving [bold]{engine.name}[/] at α={engine.alpha:g} on {url}/v1 (Ctrl-C stops)",
                          soft_wrap=True)

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        run_server(app, sock, log_level=log_level, on_start=started)
    finally:
        sock.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
