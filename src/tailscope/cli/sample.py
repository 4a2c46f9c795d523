"""`tailscope sample`: draw rollouts from a point of the logit path between two models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import console, fail, out, parse_floats, progress_bar, use_threads, write_json, write_jsonl
from ._display import proposal_label


def sample(
    reference: Optional[str] = opt.reference(lda=True),
    target: Optional[str] = opt.target(lda=True),
    organism: Optional[str] = opt.organism(),
    prompts: Optional[Path] = opt.prompts(),
    judge: Optional[str] = opt.judge(),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Path point: l_A + α (l_B − l_A)."),
    amplify: Optional[float] = typer.Option(None, "--amplify", help="LDA amplification a: α = 1 + a."),
    proposal: Optional[str] = typer.Option(None, "--proposal", help="Full proposal, e.g. 'alpha=0;switch=8;mix=0.5'."),
    n: int = opt.n(4),
    limit: Optional[int] = opt.limit(),
    max_new_tokens: Optional[int] = opt.max_new_tokens(),
    temperature: float = opt.temperature(),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
    seed: int = opt.seed(),
    grid: Optional[str] = typer.Option(None, "--grid", help="Also record log q_β for these β, e.g. '0,0.5,1'."),
    batch_size: str = opt.batch_size(auto=True),
    device: str = opt.device(),
    dtype: str = opt.dtype(),
    chat: Optional[bool] = opt.chat(),
    trust_remote_code: bool = opt.trust_remote_code(),
    revision: Optional[str] = opt.revision(),
    compile_: bool = opt.compile_decode(),
    run: Optional[str] = typer.Option(None, "--run", help=opt.HELP["run"] + " Without it nothing is stored."),
    runs_dir: Path = opt.runs_dir(),
    output: Path = typer.Option(Path("samples.jsonl"), "--out", "-o", help="Where to write the rollouts (JSONL)."),
    json_out: Optional[Path] = opt.json_out(),
    show: int = typer.Option(8, "--show", help="How many samples to print."),
    threads: Optional[int] = opt.threads(),
) -> None:
    """Sample from l_A + α (l_B − l_A): α = 0 is the reference, 1 the target, > 1 amplifies the difference."""
    from ..batching import OutOfMemoryAtOneRowError
    from ..path import NonFiniteLogitsError, Proposal

    from ._setup import open_store, resolve

    given = [x is not None for x in (alpha, amplify, proposal)]
    if sum(given) > 1:
        raise fail("give one of --alpha, --amplify or --proposal")
    try:
        if proposal is not None:
            prop = Proposal.parse(proposal)
        else:
            prop = Proposal(alpha=1.0 + amplify if amplify is not None else (alpha if alpha is not None else 1.0))
    except ValueError as e:
        raise fail(f"--proposal: {e}") from None
    betas = parse_floats(grid, "--grid") if grid else []
    use_threads(threads)
    inputs = resolve(organism=organism, reference=reference, target=target, prompts=prompts, judge=judge,
                     max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, batch_size=batch_size,
                     device=device, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision, limit=limit,
                     need_judge=False, top_k=top_k, top_p=top_p, stop=stop, chat=chat, compile=compile_)
    store = open_store(run, runs_dir, inputs, "sample") if run is not None else None
    label = proposal_label(prop.key)
    try:
        with progress_bar(f"sampling at {label}", len(inputs.prompts) * n) as advance:
            if store is not None:
                by_prompt = store.get_or_sample_many(inputs.sampler, inputs.prompts, prop, n, logprob_grid=betas,
                                                     progress=advance)
                rollouts = [r for p in inputs.prompts for r in by_prompt[p.id]]
            else:
                rollouts = inputs.sampler.sample(inputs.prompts, n, prop, logprob_grid=betas, progress=advance)
    except (NonFiniteLogitsError, OutOfMemoryAtOneRowError) as e:
        raise fail(str(e)) from None
    flagged: list[bool | None] = [None] * len(rollouts)
    if inputs.judge is not None:
        if store is not None:
            verdicts = store.judge(inputs.judge, rollouts)
        else:
            from ..estimators import judge_text

            texts = {p.id: judge_text(p) for p in inputs.prompts}
            verdicts = inputs.judge.judge([(texts[r.prompt_id], r.text) for r in rollouts])
        flagged = [v.flagged for v in verdicts]
    records = [{**r.to_dict(), **({"flagged": f} if inputs.judge is not None else {})}
               for r, f in zip(rollouts, flagged)]
    write_jsonl(output, records)

    from rich.table import Table

    # flagged rollouts first: they are what a user looks for
    order = sorted(range(len(rollouts)), key=lambda i: (flagged[i] is not True, i))
    hits = sum(1 for f in flagged if f)
    title = f"{len(rollouts)} rollouts at {label} (showing {min(show, len(rollouts))})"
    if inputs.judge is not None:
        title += f"; {hits} flagged by {inputs.judge.spec}"
    table = Table(title=title)
    cols = ("prompt", "seed", "finish", "log q", *(("flagged",) if inputs.judge is not None else ()), "text")
    for col in cols:
        table.add_column(col, overflow="fold")
    for i in order[:show]:
        r = rollouts[i]
        mark = ("[bold red]yes[/]" if flagged[i] else "no" if flagged[i] is False else "failed",) \
            if inputs.judge is not None else ()
        table.add_row(r.prompt_id, str(r.seed_index), r.finish_reason, f"{r.logprob:.2f}", *mark, r.text.strip()[:200])
    out.print(table)
    console.print(f"wrote {len(rollouts)} rollouts to {output}" + (f" (run {store.name})" if store else ""))
    write_json(json_out, {"proposal": prop.key, "rollouts": len(rollouts), "flagged": hits if inputs.judge else None,
                          "judge": inputs.judge.spec if inputs.judge else None, "out": str(output),
                          "run": store.name if store else None})
    if store is not None:
        store.close()


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
