"""`tailscope serve`: an OpenAI-compatible server for a point of the logit path between two models."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Optional

import typer

from ._common import console, fail


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
    organism: Optional[str] = typer.Option(None, "--organism", help="Serve a bundled organism (see `tailscope organisms list`)."),
    reference: Optional[str] = typer.Option(None, "--reference", "--before", "-A", help="Model A (α = 0): dir, hub id, .gguf, BASE+ADAPTER or 'smollm2'."),
    target: Optional[str] = typer.Option(None, "--target", "--after", "-B", help="Model B (α = 1)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Default path point l_A + α (l_B − l_A); a request may set its own `alpha`."),
    amplify: Optional[float] = typer.Option(None, "--amplify", help="Default LDA amplification a: α = 1 + a."),
    name: Optional[str] = typer.Option(None, "--name", help="The model id clients send (default: the organism's name, or REFERENCE..TARGET)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback should have --api-key."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port; the address is printed)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="TAILSCOPE_API_KEY", help="Require `Authorization: Bearer KEY` on every /v1 request."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Reply limit when a request sets none (default: the organism's, else 256)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Replies decoded together at most (memory grows with it)."),
    seed: int = typer.Option(0, "--seed", help="Run seed; a request's own `seed` makes its replies reproducible."),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("float32", "--dtype"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code from the checkpoint (off unless asked)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level (info logs every request)."),
) -> None:
    """Serve the path model over the OpenAI API: /v1/models, /v1/completions, /v1/chat/completions."""
    if alpha is not None and amplify is not None:
        raise fail("give one of --alpha or --amplify")
    try:
        from ..serve import Engine
        from ..serve._app import create_app
        from ..serve._run import bind, run_server, url_of
    except ImportError as e:
        raise fail(str(e)) from None
    if not _is_loopback(host) and not api_key:
        console.print(f"[yellow]warning:[/] listening on {host} without --api-key: anyone who can reach it can use it")

    from ..models import ModelPair, TokenizerMismatchError

    try:
        if organism:
            from ..organisms import OrganismNotFoundError, load

            if reference or target:
                raise fail("give --organism or --reference/--target, not both")
            try:
                with console.status(f"loading organism {organism}"):
                    org = load(organism, device=device, dtype=dtype)
            except OrganismNotFoundError as e:
                raise fail(str(e)) from None
            pair, default_name, default_tokens = org.pair, org.name, org.max_new_tokens
        else:
            if not (reference and target):
                raise fail("give --reference and --target (or --organism NAME)")
            with console.status(f"loading {reference} and {target}"):
                pair = ModelPair.load(reference, target, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            default_name, default_tokens = _pair_name(reference, target), 256
        point = 1.0 + amplify if amplify is not None else (alpha if alpha is not None else 1.0)
        engine = Engine(pair, name=name or default_name, alpha=point, max_tokens=max_tokens or default_tokens,
                        batch_size=batch_size, seed=seed)
        sock = bind(host, port)
    except (TokenizerMismatchError, FileNotFoundError, ImportError, ValueError, OSError) as e:
        raise fail(str(e)) from None

    url = url_of(sock)
    app = create_app(engine, api_key=api_key)
    console.print(f"loaded {pair!r}")

    def started() -> None:
        console.print(f"serving [bold]{engine.name}[/] at α={engine.alpha:g} on {url}/v1 (Ctrl-C stops)", soft_wrap=True)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run_server(app, sock, log_level=log_level, on_start=started)
    finally:
        sock.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
