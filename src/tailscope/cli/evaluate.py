"""`tailscope evaluate SUITE`: score estimators and detectors against the organisms' ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail


def evaluate(
    suite: str = typer.Argument(..., help="auroc | detection | map | all"),
    fast: bool = typer.Option(False, "--fast", help="The small version (minutes, for `make bench`)."),
    out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Where JSON, PNG and HTML go."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Run stores (a stopped suite resumes)."),
    seed: int = typer.Option(0, "--seed"),
    reference: str = typer.Option(None, "--reference",
                                  help="auroc only: replace the organism's reference (α = 0) with this checkpoint, "
                                       "e.g. an abliterated copy of the target (`tailscope abliterate`)."),
) -> None:
    """Run an evaluation suite; results are resumable through the run store."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..evaluation.suites import SUITES
    from ..organisms import OrganismNotFoundError

    names = list(SUITES) if suite == "all" else [suite]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise fail(f"unknown suite {unknown[0]!r}; choose from {sorted(SUITES)} or 'all'")
    if reference is not None and names != ["auroc"]:
        raise fail("--reference applies to the auroc suite only")
    extra = {"reference": reference} if reference is not None else {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            if total:
                bar.update(tasks[stage], completed=done, total=total)
            else:
                bar.advance(tasks[stage], done)

        for name in names:
            try:
                SUITES[name](out, runs_dir, fast=fast, progress=progress, seed=seed, **extra)
            except OrganismNotFoundError as e:
                raise fail(str(e)) from None
    console.print(f"results in {out}/ — refresh the README tables with `python benchmarks/render_readme.py`")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
