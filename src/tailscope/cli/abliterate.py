"""`tailscope abliterate`: build the less-safe variant of a safety-tuned model (METHODS.md §4)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import console, fail, out, use_threads, write_json
from ._errors import check_device, check_dtype, check_model_spec, loading


def abliterate(
    model: str = opt.target(required=True, alias="--model"),
    harmful: Path = typer.Option(..., "--harmful", help="Prompts it refuses: JSONL (prompt or messages), CSV or text."),
    harmless: Optional[Path] = typer.Option(None, "--harmless", help="Prompts it answers (default: a built-in set of 48)."),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="New checkpoint directory (not needed with --dry-run)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Force this layer (its best position is taken)."),
    position: Optional[int] = typer.Option(None, "--position", help="Force this post-instruction position (-1 = last prompt token)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Search only these layers, e.g. '8,12,16' (default: every layer l < 0.8 L)."),
    positions: Optional[int] = typer.Option(None, "--positions", help="Trailing prompt positions searched (default: the template's post-instruction tokens)."),
    projected: bool = typer.Option(False, "--projected", help="Make the direction orthogonal to the harmless mean first."),
    norm_preserving: bool = typer.Option(False, "--norm-preserving", help="Keep the norms of the edited weight vectors."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Score the candidates only; edit and save nothing."),
    as_adapter: bool = typer.Option(False, "--as-adapter", help="Write the edit as a PEFT LoRA adapter (rank 1 per matrix) of --model instead of a full checkpoint; use it as 'MODEL+OUT'."),
    max_kl: float = typer.Option(0.1, "--max-kl", help="KL bound on held-out harmless prompts' first reply token."),
    holdout: float = typer.Option(0.25, "--holdout", help="Fraction of each prompt set held out to judge candidates."),
    refusal_opening: list[str] = typer.Option([], "--refusal-opening", help="Reply opening counted as a refusal (repeatable; default: I can't, I cannot, I'm sorry, Sorry, I won't, As an AI)."),
    score: str = typer.Option("first_token", "--score", help="Refusal score: first_token (first token of an opening) or opening (the whole opening, teacher-forced)."),
    check_samples: int = typer.Option(0, "--check-samples", help="Replies sampled per held-out harmful prompt before and after, read by the judge."),
    check_judge: str = typer.Option("refusal", "--check-judge", help="Judge spec of the sampled check."),
    batch_size: int = opt.batch_size(8),
    seed: int = opt.seed(),
    chat: Optional[bool] = opt.chat(),
    device: str = opt.device(),
    dtype: str = opt.dtype(),
    trust_remote_code: bool = opt.trust_remote_code(),
    show: int = typer.Option(20, "--show", help="Candidates listed (best refusal scores first; the chosen one always)."),
    json_out: Optional[Path] = opt.json_out(),
    threads: Optional[int] = opt.threads(),
) -> None:
    """Find the refusal direction of the target (a safety-tuned model) and remove it from the weights;
    save a checkpoint with an abliteration.json card."""
    from ..abliteration import NoCandidateError, SearchOptions, UnsupportedArchitectureError, harmless_prompts
    from ..abliteration import abliterate as run
    from ..abliteration._scoring import REFUSAL_OPENINGS
    from ..models import load_model
    from ..prompts import PromptFileError, load_prompts

    if output is None and not dry_run:
        raise fail("give --out DIR for the new checkpoint (or --dry-run to score candidates only)")
    if output is not None and not dry_run and output.exists() and any(output.iterdir()):
        raise fail(f"{output} exists and is not empty; choose a new directory for the checkpoint")
    try:
        searched = tuple(int(x) for x in layers.split(",") if x.strip()) if layers else None
    except ValueError:
        raise fail(f"--layers must be comma-separated layer numbers, got {layers!r}") from None
    check_device(device)
    check_dtype(dtype)
    check_model_spec(model, "--target")
    use_threads(threads)
    try:
        harmful_set = load_prompts(harmful)
        harmless_set = load_prompts(harmless) if harmless is not None else harmless_prompts()
        options = SearchOptions(layer=layer, position=position, layers=searched, positions=positions,
                                projected=projected, max_kl=max_kl, holdout=holdout, batch_size=batch_size,
                                chat=chat, seed=seed, refusal_openings=tuple(refusal_opening) or REFUSAL_OPENINGS,
                                score=score)
        with console.status(f"loading {model}"), loading(model, "--target"):
            lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        with _candidate_bar() as progress:
            result = run(lm, harmful_set, harmless_set, None if dry_run else output, options=options,
                         norm_preserving=norm_preserving, dry_run=dry_run, check_samples=check_samples,
                         check_judge=check_judge, progress=progress, as_adapter=as_adapter)
    except (PromptFileError, UnsupportedArchitectureError, NoCandidateError, FileNotFoundError, FileExistsError,
            ImportError, ValueError) as e:
        raise fail(str(e)) from None

    card = result.card()
    write_json(json_out, card)
    if str(json_out) == "-":
        return
    _print_tables(card, show)
    if result.out is not None and as_adapter:
        console.print(f"wrote the abliteration adapter to {result.out} (card: {result.out / 'abliteration.json'}); "
                      f"use it as --reference '{model}+{result.out}'")
    elif result.out is not None:
        console.print(f"wrote the abliterated checkpoint to {result.out} (card: {result.out / 'abliteration.json'})")


@contextlib.contextmanager
def _candidate_bar() -> Iterator[Callable[[int, int], None]]:
    """A progress bar whose total (the number of candidates) is learnt from the first update."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("scoring candidate directions", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_tables(card: dict, show: int) -> None:
    from rich.table import Table

    chosen = (card["layer"], card["position"])
    ranked = sorted(card["candidates"], key=lambda c: (c["refusal_score"] is None, c["refusal_score"] or 0.0))
    listed = ranked[:max(show, 0)]
    listed += [c for c in ranked if (c["layer"], c["position"]) == chosen and c not in listed]
    table = Table(title=f"{len(listed)} of {len(ranked)} candidate directions, lowest held-out refusal score with "
                        f"the direction ablated first (KL ≤ {card['options']['max_kl']:g} on harmless prompts)")
    for col in ("layer", "position", "‖r‖", "refusal score", "KL", ""):
        table.add_column(col, justify="right" if col else "left")
    for c in listed:
        mark = "[bold green]chosen[/]" if (c["layer"], c["position"]) == chosen else c["note"]
        score = "-" if c["refusal_score"] is None else f"{c['refusal_score']:.2f}"
        kl = "-" if c["kl"] is None else f"{c['kl']:.3f}"
        table.add_row(str(c["layer"]), str(c["position"]), f"{c['norm']:.3g}", score, kl, mark)
    out.print(table)
    summary = Table(title="abliteration", show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("chosen", f"layer {card['layer']} of {card['num_layers']}, position {card['position']}")
    summary.add_row("refusal score before", f"{card['baseline_refusal_score']:.2f} (log-odds, held-out harmful)")
    if card["refusal_score_after"] is not None:
        summary.add_row("refusal score after", f"{card['refusal_score_after']:.2f}")
        summary.add_row("KL on harmless", f"{card['kl_after']:.4f}")
    else:
        summary.add_row("refusal score with ablation", f"{card['search_refusal_score']:.2f} (dry run: nothing edited)")
        summary.add_row("KL on harmless", f"{card['search_kl']:.4f}")
    for label, check in card["checks"].items():
        summary.add_row(f"compliance {label} ({check['judge']})",
                        f"{check['flagged']}/{check['rollouts']} = {check['compliance_rate']:.3f}")
    if card["edited"] and card["edited"]["untied_lm_head"]:
        summary.add_row("note", "the LM head was untied from the embedding before the edit (unembedding unchanged)")
    final = card["refusal_score_after"] if card["refusal_score_after"] is not None else card["search_refusal_score"]
    if final > card["baseline_refusal_score"] - 1.0:
        summary.add_row("warning", f"the refusal log-odds fell by only {card['baseline_refusal_score'] - final:.2f}: "
                                   "check that --refusal-opening matches how this model refuses, and whether better "
                                   "candidates were rejected by --max-kl")
    if card["edited"] and card["edited"]["approximate"]:
        summary.add_row("warning", card["edited"]["approximate"])
    out.print(summary)


def register(app: typer.Typer) -> None:
    app.command("abliterate")(abliterate)
