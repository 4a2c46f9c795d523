"""`tailscope sweep`: logit diff amplification at several strengths, with coherence and examples."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..scale._cli import with_workers
from . import _options as opt
from ._common import console, fail, out, parse_floats, progress_bar, use_threads, write_json
from ._setup import open_store, resolve


@with_workers
def sweep(
    reference: Optional[str] = opt.reference(lda=True),
    target: Optional[str] = opt.target(lda=True),
    organism: Optional[str] = opt.organism(),
    prompts: Optional[Path] = opt.prompts(),
    judge: Optional[str] = opt.judge(),
    amplify: str = typer.Option("0,0.3,1,2,5", "--amplify", help="Amplifications a (α = 1 + a), comma-separated."),
    n: int = opt.n(64),
    limit: Optional[int] = opt.limit(),
    max_new_tokens: Optional[int] = opt.max_new_tokens(),
    temperature: float = opt.temperature(),
    seed: int = opt.seed(),
    batch_size: str = opt.batch_size(auto=True),
    device: str = opt.device(),
    dtype: str = opt.dtype(),
    trust_remote_code: bool = opt.trust_remote_code(),
    revision: Optional[str] = opt.revision(),
    compile_: bool = opt.compile_decode(),
    run: Optional[str] = opt.run(),
    runs_dir: Path = opt.runs_dir(),
    json_out: Optional[Path] = opt.json_out(),
    examples: int = typer.Option(2, "--examples", help="Flagged completions to show per amplification."),
    threads: Optional[int] = opt.threads(),
    pool: object = None,
) -> None:
    """Amplify what training changed (l_after + a (l_after − l_before)) and see how often the behaviour shows."""
    from ..estimators import StoreSource
    from ..lda import lda_sweep
    from ..batching import OutOfMemoryAtOneRowError
    from ..path import NonFiniteLogitsError

    amps = parse_floats(amplify, "--amplify")
    if not amps:
        raise fail("--amplify needs at least one amplification, e.g. 0,1,2")
    use_threads(threads)
    inputs = resolve(organism=organism, reference=reference, target=target, prompts=prompts, judge=judge,
                     max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, batch_size=batch_size,
                     device=device, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision, limit=limit,
                     pool=pool, compile=compile_)
    store = open_store(run, runs_dir, inputs, "sweep")
    total = len(inputs.prompts) * n * len(amps)
    if pool is not None:
        pool.expect(total, store.count())
    try:
        with progress_bar(f"sweep: {len(amps)} amplifications × {len(inputs.prompts)} prompts × {n}", total) as advance:
            source = StoreSource(store, inputs.sampler, inputs.judge, advance)
            points = lda_sweep(source, inputs.prompts, amps, n, examples=examples)
    except (NonFiniteLogitsError, OutOfMemoryAtOneRowError) as e:
        raise fail(str(e)) from None
    from rich.table import Table

    table = Table(title=f"behaviour rate vs amplification ({len(inputs.prompts)} prompts × {n} rollouts each)")
    for col in ("a", "α", "hits", "rate [95% CI]", "rollouts/hit", "log p_after/token", "ppl_before", "len"):
        table.add_column(col)
    for p in points:
        ci = f"{p.rate:.2g} [{p.interval[0]:.2g}, {p.interval[1]:.2g}]" if p.hits else f"< {p.interval[1]:.2g}"
        per_hit = f"{p.rollouts_per_hit:.0f}" if p.hits else "–"
        table.add_row(f"{p.amplification:g}", f"{p.alpha:g}", str(p.hits), ci, per_hit,
                      f"{p.logprob_after_per_token:.2f}", f"{p.perplexity_before:.1f}", f"{p.mean_length:.0f}")
    out.print(table)
    for p in points:
        for ex in p.examples:
            out.print(f"[bold]a={p.amplification:g}[/] {ex['prompt_id']}#{ex['seed_index']}: {ex['text'][:240]!r}")
    console.print("Higher a surfaces more; the rate at a > 0 is not the after model's rate (use `tailscope estimate`).")
    for p in points:  # kept with the run, so `tailscope report` can show the sweep without the models
        store.record_estimate("sweep", p.to_dict())
    payload = {"run": store.name, "points": [p.to_dict() for p in points]}
    if pool is not None:
        payload["workers"] = pool.workers_summary()
    write_json(json_out, payload)
    console.print(f"report: tailscope report {store.name}" + (f" --runs-dir {runs_dir}" if str(runs_dir) != "runs" else ""))
    store.close()


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
