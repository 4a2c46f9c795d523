"""The `tailscope` command line: a thin shell over the library.

Each module in this package defines ``register(app)`` adding its commands; modules keep heavy
imports (torch, transformers) inside the command functions so `tailscope --help` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # recent typer ships its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as _click_errors  # type: ignore[no-redef]


class _Root(TyperGroup):
    """The root command: a usage error (an unknown option, a value of the wrong kind) is one line that
    names the command's --help, instead of a framed box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except _click_errors.NoArgsIsHelpError as e:
            e.show()
            result = e.exit_code
        except _click_errors.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "tailscope"
            typer.echo(f"error: {e.format_message()} (see `{where} --help`)", err=True)
            result = e.exit_code
        except _click_errors.ClickException as e:
            e.show()
            result = e.exit_code
        except typer.Abort:
            typer.echo("aborted", err=True)
            result = 1
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=_Root,
    name="tailscope",
    help="Find and measure the rare behaviours of language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"tailscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Find and measure the rare behaviours of language models."""
    _quiet_dependencies()


def _quiet_dependencies() -> None:
    """Keep transformers' and the hub's own progress bars and advice out of ours (set before they load;
    a user's own setting of these variables wins)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # already imported (the variables are read at import): tell them directly
    if "huggingface_hub" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            logging.disable_progress_bar()
        if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
            logging.set_verbosity_error()


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
