"""`tailscope demo`: the bundled organisms, measured and probed in a few minutes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import console, fail, out, staged_progress, use_threads, write_json


def demo(
    out_dir: Path = typer.Option(Path("tailscope-report/demo"), "--out", "-o", help="Where the HTML report goes."),
    runs_dir: Path = opt.runs_dir(),
    limit: int = typer.Option(4, "--limit", parser=opt.count, metavar="N", help="Refusal prompts to estimate."),
    budget: int = opt.budget(400),
    seed: int = opt.seed(),
    batch_size: str = opt.batch_size(256, auto=True),
    json_out: Optional[Path] = opt.json_out(),
    threads: Optional[int] = opt.threads(),
) -> None:
    """Estimate rare compliance on the refusal organism and surface the backdoor organism's behaviour."""
    from ..demo import run_demo
    from ..organisms import OrganismNotFoundError

    count = use_threads(threads)
    start = time.perf_counter()
    with staged_progress("rollouts") as progress:
        try:
            results = run_demo(out_dir, runs_dir, prompts=limit, budget=budget, seed=seed, batch_size=batch_size,
                               say=out.print, progress=progress)
        except OrganismNotFoundError as e:
            raise fail(str(e)) from None
    seconds = time.perf_counter() - start
    results["seconds"], results["threads"] = round(seconds, 1), count
    console.print(f"done in {seconds:.0f} s ({count} torch thread{'s' if count > 1 else ''}). "
                  f"Report: [bold]{results['report']}[/]")
    console.print(f"Rollouts are stored in {runs_dir}/: running the demo again reuses them.")
    write_json(json_out, results)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
