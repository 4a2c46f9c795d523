"""`tailscope evaluate SUITE`: score estimators and detectors against the organisms' ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..scale._cli import with_workers
from . import _options as opt
from ._common import console, fail, staged_progress, use_threads, write_json


@with_workers
def evaluate(
    suite: str = typer.Argument(..., help="auroc | calibration | detection | harmbench | map | all"),
    fast: bool = typer.Option(False, "--fast", help="The small version (minutes, for `make bench`)."),
    out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Where JSON, PNG and HTML go."),
    runs_dir: Path = opt.runs_dir(),
    seed: int = opt.seed(),
    reference: str = opt.reference(),
    json_out: Optional[Path] = opt.json_out(),
    threads: Optional[int] = opt.threads(),
    limit: Optional[int] = typer.Option(None, "--limit", parser=opt.count, metavar="N",
                                        help="harmbench only: score N behaviours (default 12, 8 with --fast)."),
    split: str = typer.Option("scored", "--split", metavar="scored|tuning",
                              help="calibration only: `tuning` runs the protocol on prompts no scored run scores "
                                   "(where the intervals' widenings are chosen)."),
    pool: object = None,
) -> None:
    """Run an evaluation suite; results are resumable through the run store.

    With --reference (auroc only) the organism's reference is replaced by that checkpoint, e.g. an
    abliterated copy of the target (`tailscope abliterate`)."""
    from ..evaluation.suites import SUITES
    from ..evaluation.calibration import UnusableOrganismError
    from ..organisms import OrganismNotFoundError

    names = list(SUITES) if suite == "all" else [suite]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise fail(f"unknown suite {unknown[0]!r}; choose from {sorted(SUITES)} or 'all'")
    if reference is not None and names != ["auroc"]:
        raise fail("--reference applies to the auroc suite only")
    if reference is not None:
        from ._errors import check_model_spec

        check_model_spec(reference, "--reference")
    if limit is not None and names != ["harmbench"]:
        raise fail("--limit applies to the harmbench suite only")
    if split not in ("scored", "tuning"):
        raise fail(f"--split must be 'scored' or 'tuning', not {split!r}")
    if split != "scored" and names != ["calibration"]:
        raise fail("--split applies to the calibration suite only")
    extra = {"reference": reference} if reference is not None else {}
    if split != "scored":
        extra["split"] = split
    if limit is not None:
        extra["prompts"] = limit
    if pool is not None:
        extra["distribute"] = pool.distribute
    use_threads(threads)
    results = {}
    with staged_progress() as progress:
        for name in names:
            try:
                results[name] = SUITES[name](out, runs_dir, fast=fast, progress=progress, seed=seed, **extra)
            except (OrganismNotFoundError, UnusableOrganismError) as e:
                raise fail(f"{name}: {e}") from None
    write_json(json_out, results)
    console.print(f"results in {out}/ — refresh the README tables with `python benchmarks/render_readme.py`")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
