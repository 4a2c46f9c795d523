"""`tailscope organisms list | build NAME | verify NAME`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import use_threads, write_json

organisms_app = typer.Typer(help="Model organisms: small model pairs with planted rare behaviours and exact ground truth.",
                            no_args_is_help=True)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _tracker(bar):
    """Progress callback: rich bars on a terminal, one line per finished stage otherwise (logs, CI)."""
    import sys
    import time

    tasks: dict[str, int] = {}
    if not sys.stderr.isatty():
        started: dict[str, float] = {}

        def log(stage: str, done: int, total: int) -> None:
            started.setdefault(stage, time.time())
            if done >= total:
                typer.echo(f"{stage}: {done}/{total} ({time.time() - started[stage]:.0f} s)", err=True)

        return log

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return update


@organisms_app.command("list")
def list_cmd(json_out: Optional[Path] = opt.json_out()) -> None:
    """List the shipped organisms with their prompt counts and rate ranges."""
    from rich.console import Console
    from rich.table import Table

    from tailscope.organisms import DATA_DIR, list_organisms

    rows = []
    for name in list_organisms():
        card = json.loads((DATA_DIR / name / "card.json").read_text())
        m = card.get("measured", {})
        rows.append({"name": name, "summary": card.get("summary", ""), "prompts": m.get("prompts"),
                     "rate_min": m.get("rate_min"), "rate_max": m.get("rate_max"),
                     "per_token_kl": m.get("harmful", {}).get("per_token_kl", m.get("per_token_kl"))})
    write_json(json_out, rows)
    if str(json_out) == "-":
        return
    table = Table(title="tailscope organisms")
    widths = {"name": max([len(r["name"]) for r in rows] + [4]), "prompts": 7, "rate range": 20, "KL/token": 8}
    for col, width in widths.items():
        table.add_column(col, no_wrap=True, min_width=width)
    table.add_column("summary", max_width=48, no_wrap=True, overflow="ellipsis")
    for r in rows:
        rng = f"{r['rate_min']:.1e} .. {r['rate_max']:.1e}" if r["rate_min"] is not None else "-"
        kl = f"{r['per_token_kl']:.3f}" if r["per_token_kl"] is not None else "-"
        table.add_row(r["name"], str(r["prompts"]), rng, kl, r["summary"])
    Console().print(table)


@organisms_app.command("build")
def build_cmd(
    name: str = typer.Argument(..., help="Organism to build (see `tailscope organisms list`), or `all`."),
    out: Optional[Path] = typer.Option(None, help="Data folder to write (default: the installed package's)."),
    threads: Optional[int] = opt.threads(),
) -> None:
    """Rebuild an organism from its recipe (fixed seeds): train, save fp16 weights, compute ground truth.

    `all` rebuilds every organism from scratch, the shared chat model first, and prints the time of each.
    The shipped files were built with `--threads 1`, which reproduces them to the last digit."""
    import time

    from tailscope.organisms.build import BUILD_ORDER, build

    use_threads(threads)
    names = list(BUILD_ORDER) if name == "all" else [name]
    total = time.time()
    for n in names:
        started = time.time()
        with _progress() as bar:
            folder = build(n, root=out, progress=_tracker(bar))
        typer.echo(f"built {n} in {folder} ({time.time() - started:.0f} s)")
    if len(names) > 1:
        typer.echo(f"built {len(names)} recipes in {(time.time() - total) / 60:.1f} min")


@organisms_app.command("verify")
def verify_cmd(
    name: str = typer.Argument(..., help="Organism to verify."),
    rollouts: int = opt.n(2000),
    prompts: int = typer.Option(4, "--limit", parser=opt.count, metavar="N", help="Prompts checked per α."),
    alpha: list[float] = typer.Option([1.0], help="Path points to check (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data folder holding the organism."),
    json_out: Optional[Path] = opt.json_out(),
    threads: Optional[int] = opt.threads(),
) -> None:
    """Re-check stored ground-truth rates against fresh sampling; exits 1 on any disagreement."""
    from rich.console import Console
    from rich.table import Table

    from tailscope.organisms.build import verify

    use_threads(threads)
    with _progress() as bar:
        checks = verify(name, rollouts=rollouts, prompts=prompts, alphas=alpha, data_dir=data_dir,
                        progress=_tracker(bar))
    write_json(json_out, checks)
    if str(json_out) != "-":
        table = Table(title=f"verify {name}")
        for col in ("prompt", "α", "stored rate", "hits / rollouts", "95% interval", "p", "ok"):
            table.add_column(col)
        for c in checks:
            table.add_row(c["prompt_id"], f"{c['alpha']:g}", f"{c['rate']:.3e}", f"{c['hits']}/{c['rollouts']}",
                          f"[{c['interval'][0]:.2e}, {c['interval'][1]:.2e}]", f"{c['p_value']:.3f}",
                          "yes" if c["ok"] else "[red]NO[/red]")
        Console().print(table)
    if not checks:
        typer.echo("no prompt has a rate that sampling can see at this budget; raise --rollouts", err=True)
        raise typer.Exit(1)
    bad = [c for c in checks if not c["ok"]]
    if bad:
        typer.echo(f"ground truth DISAGREES with sampling on {len(bad)} of {len(checks)} checks", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(organisms_app, name="organisms")
