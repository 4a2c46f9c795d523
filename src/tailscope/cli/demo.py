"""`tailscope demo`: the bundled organisms, measured and probed in a few minutes."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._common import console, fail, out


def demo(
    out_dir: Path = typer.Option(Path("tailscope-report/demo"), "--out", help="Where the HTML report goes."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    prompts: int = typer.Option(4, "--prompts", help="Refusal prompts to estimate."),
    budget: int = typer.Option(400, "--budget", help="Rollouts per prompt for each estimate."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Estimate rare compliance on the refusal organism and surface the backdoor organism's behaviour."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..demo import run_demo
    from ..organisms import OrganismNotFoundError

    start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            if total:
                bar.update(tasks[stage], completed=done)
            else:
                bar.advance(tasks[stage], done)

        try:
            results = run_demo(out_dir, runs_dir, prompts=prompts, budget=budget, seed=seed, say=out.print,
                               progress=progress)
        except OrganismNotFoundError as e:
            raise fail(str(e)) from None
    console.print(f"done in {time.perf_counter() - start:.0f} s. Report: [bold]{results['report']}[/]")
    console.print(f"Rollouts are stored in {runs_dir}/: running the demo again reuses them.")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
