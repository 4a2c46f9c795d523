"""The `tailscope` command line: a thin shell over the library.

Each module in this package defines ``register(app)`` adding its commands; modules keep heavy
imports (torch, transformers) inside the command functions so `tailscope --help` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="tailscope",
    help="Find and measure the rare behaviours of language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    """Find and measure the rare behaviours of language models."""
    if version:
        from .. import __version__

        typer.echo(f"tailscope {__version__}")
        raise typer.Exit()


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    app()
