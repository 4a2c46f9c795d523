"""`tailscope sample`: draw rollouts from a point of the logit path between two models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import console, fail, out, parse_floats, progress_bar, write_jsonl


def sample(
    reference: str = typer.Option(..., "--reference", "--before", "-A", help="Model A (α = 0): dir, hub id, .gguf, BASE+ADAPTER or 'smollm2'."),
    target: str = typer.Option(..., "--target", "--after", "-B", help="Model B (α = 1)."),
    prompts: Path = typer.Option(..., "--prompts", "-p", help="JSONL (prompt or messages), CSV, or text (one prompt a line)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Path point: l_A + α (l_B − l_A)."),
    amplify: Optional[float] = typer.Option(None, "--amplify", help="LDA amplification a: α = 1 + a."),
    proposal: Optional[str] = typer.Option(None, "--proposal", help="Full proposal, e.g. 'a=0;switch=8;mix=0.5'."),
    n: int = typer.Option(4, "-n", help="Rollouts per prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
    seed: int = typer.Option(0, "--seed"),
    grid: Optional[str] = typer.Option(None, "--grid", help="Also record log q_β for these β, e.g. '0,0.5,1'."),
    batch_size: int = typer.Option(128, "--batch-size", help="Rows decoded together (memory grows with it)."),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("float32", "--dtype"),
    chat: Optional[bool] = typer.Option(None, "--chat/--raw", help="Apply the chat template to text prompts (default: when the tokenizer has one)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code from the checkpoint (off unless asked)."),
    output: Path = typer.Option(Path("samples.jsonl"), "--out", "-o", help="Where to write the rollouts (JSONL)."),
    show: int = typer.Option(8, "--show", help="How many samples to print."),
) -> None:
    """Sample from l_A + α (l_B − l_A): α = 0 is the reference, 1 the target, > 1 amplifies the difference."""
    from ..models import ModelPair, TokenizerMismatchError
    from ..path import NonFiniteLogitsError, Proposal
    from ..prompts import PromptFileError, load_prompts
    from ..sampling import PathSampler

    given = [x is not None for x in (alpha, amplify, proposal)]
    if sum(given) > 1:
        raise fail("give one of --alpha, --amplify or --proposal")
    try:
        if proposal is not None:
            prop = Proposal.parse(proposal)
        else:
            prop = Proposal(alpha=1.0 + amplify if amplify is not None else (alpha if alpha is not None else 1.0))
        prompt_set = load_prompts(prompts)
    except (ValueError, PromptFileError) as e:
        raise fail(str(e)) from None
    betas = parse_floats(grid, "--grid") if grid else []
    try:
        with console.status(f"loading {reference} and {target}"):
            pair = ModelPair.load(reference, target, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        sampler = PathSampler(pair, temperature=temperature, max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
                              stop=stop, batch_size=batch_size, chat=chat, seed=seed)
        with progress_bar(f"sampling at {prop.key}", len(prompt_set) * n) as advance:
            rollouts = sampler.sample(prompt_set, n, prop, logprob_grid=betas, progress=advance)
    except (TokenizerMismatchError, NonFiniteLogitsError, FileNotFoundError, ImportError, ValueError) as e:
        raise fail(str(e)) from None
    write_jsonl(output, [r.to_dict() for r in rollouts])

    from rich.table import Table

    table = Table(title=f"{len(rollouts)} rollouts at {prop.key} (showing {min(show, len(rollouts))})")
    for col in ("prompt", "seed", "finish", "log q", "text"):
        table.add_column(col, overflow="fold")
    for r in rollouts[:show]:
        table.add_row(r.prompt_id, str(r.seed_index), r.finish_reason, f"{r.logprob:.2f}", r.text.strip()[:200])
    out.print(table)
    console.print(f"wrote {len(rollouts)} rollouts to {output}")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
