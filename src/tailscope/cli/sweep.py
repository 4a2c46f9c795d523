"""`tailscope sweep`: logit diff amplification at several strengths, with coherence and examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._common import console, fail, out, parse_floats, progress_bar
from ._setup import open_store, resolve


def sweep(
    before: Optional[str] = typer.Option(None, "--before", "-A", help="The model before training (α = 0)."),
    after: Optional[str] = typer.Option(None, "--after", "-B", help="The model after training (α = 1)."),
    organism: Optional[str] = typer.Option(None, "--organism"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", "-p"),
    judge: Optional[str] = typer.Option(None, "--judge", "-j"),
    amplify: str = typer.Option("0,0.3,1,2,5", "--amplify", help="Amplifications a (α = 1 + a)."),
    n: int = typer.Option(64, "-n", help="Rollouts per prompt at each amplification."),
    limit: Optional[int] = typer.Option(None, "--limit"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(128, "--batch-size", help="Rows decoded together (memory grows with it)."),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("float32", "--dtype"),
    run: Optional[str] = typer.Option(None, "--run"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    examples: int = typer.Option(2, "--examples", help="Flagged completions to show per amplification."),
) -> None:
    """Amplify what training changed (l_after + a (l_after − l_before)) and see how often the behaviour shows."""
    from ..lda import lda_sweep
    from ..path import NonFiniteLogitsError

    amps = parse_floats(amplify, "--amplify")
    inputs = resolve(organism=organism, reference=before, target=after, prompts=prompts, judge=judge,
                     max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, batch_size=batch_size,
                     device=device, dtype=dtype, limit=limit)
    store = open_store(run, runs_dir, inputs, "sweep")
    total = len(inputs.prompts) * n * len(amps)
    try:
        with progress_bar("sampling", total) as advance:
            points = lda_sweep(inputs.sampler, inputs.judge, inputs.prompts, amps, n, store=store,
                               examples=examples, progress=advance)
    except NonFiniteLogitsError as e:
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
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"run": store.name, "points": [p.to_dict() for p in points]}, indent=1) + "\n")
        console.print(f"wrote {json_out}")
    store.close()


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
