"""Finding the refusal direction (METHODS.md §4, Arditi et al. 2024).

1. Split each prompt set into a part that defines the directions and a held-out part that judges them.
2. Mean residual stream per (layer, post-instruction position) over harmful and harmless prompts;
   each candidate is the difference of the two means (optionally made orthogonal to the harmless
   mean: ``projected``).
3. For each candidate in the allowed layers (l < 0.8 L), ablate it at inference time and
   measure the held-out harmful prompts' refusal score and the held-out harmless prompts' KL from
   the unedited model's first-token distributions.
4. Choose the lowest refusal score among the candidates with KL ≤ ``max_kl``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from ..prompts import Prompt
from ._activations import first_token_logprobs, mean_activations, opening_logprobs, post_instruction_length
from ._arch import residual_layout
from ._edit import ablate_direction
from ._scoring import REFUSAL_OPENINGS, harmless_kl, log_odds, opening_token_ids, refusal_scores, refusal_token_ids

__all__ = [
    "Candidate", "DirectionSearch", "NoCandidateError", "SearchOptions", "find_refusal_direction", "refusal_score",
]


class NoCandidateError(RuntimeError):
    """No candidate direction satisfies the constraints."""


@dataclass(frozen=True)
class SearchOptions:
    """How the refusal direction is found.

    Attributes:
        layer: force this layer (the best position there is taken, whatever its KL).
        position: force this post-instruction position (negative, ``-1`` is the last prompt token).
        layers: the layers to search (default: every layer outside the last ``exclude_last``).
        positions: how many trailing prompt positions to consider (default: the chat template's
            post-instruction tokens).
        projected: make each candidate orthogonal to the harmless mean at its (layer, position).
        max_kl: the KL bound on held-out harmless prompts' first-token distributions.
        exclude_last: layers l ≥ (1 − exclude_last) · L are never searched (Arditi et al.: l < 0.8 L).
        holdout: the fraction of each prompt set held out to judge candidates.
        refusal_openings: the reply openings counted as refusals.
        score: ``first_token`` counts a reply as a refusal when its first token is the first token of
            an opening (one forward pass per prompt); ``opening`` when it starts with a whole opening
            (teacher-forced, one forward pass per prompt and opening), which tells "Sure, here is why
            this must be declined" from "Sure, here is how".
        batch_size: prompts per forward pass (bounds memory).
        chat: apply the chat template to text prompts (None: when the tokenizer has one).
        seed: the seed of the held-out split.
    """

    layer: int | None = None
    position: int | None = None
    layers: tuple[int, ...] | None = None
    positions: int | None = None
    projected: bool = False
    max_kl: float = 0.1
    exclude_last: float = 0.2
    holdout: float = 0.25
    refusal_openings: tuple[str, ...] = REFUSAL_OPENINGS
    score: Literal["first_token", "opening"] = "first_token"
    batch_size: int = 8
    chat: bool | None = None
    seed: int = 0


@dataclass(frozen=True)
class Candidate:
    """One candidate direction and how ablating it scores on the held-out prompts."""

    layer: int
    position: int
    norm: float
    refusal_score: float | None = None
    kl: float | None = None
    eligible: bool = True
    note: str = ""


@dataclass
class DirectionSearch:
    """The result of :func:`find_refusal_direction`: the chosen unit direction and every candidate."""

    direction: torch.Tensor
    layer: int
    position: int
    candidates: list[Candidate]
    baseline_refusal_score: float
    baseline_harmless_refusal_score: float
    num_layers: int
    positions: int
    splits: dict[str, int]
    options: SearchOptions
    refusal_token_ids: list = field(default_factory=list)
    heldout_harmful: list[Prompt] = field(default_factory=list, repr=False)
    heldout_harmless: list[Prompt] = field(default_factory=list, repr=False)
    baseline_harmless_logprobs: torch.Tensor | None = field(default=None, repr=False)

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if (c.layer, c.position) == (self.layer, self.position))

    def to_dict(self) -> dict:
        opts = asdict(self.options)
        return {
            "layer": self.layer, "position": self.position, "num_layers": self.num_layers,
            "positions": self.positions, "refusal_score": self.chosen.refusal_score, "kl": self.chosen.kl,
            "baseline_refusal_score": self.baseline_refusal_score,
            "baseline_harmless_refusal_score": self.baseline_harmless_refusal_score,
            "refusal_token_ids": self.refusal_token_ids, "splits": self.splits, "options": opts,
            "candidates": [asdict(c) for c in self.candidates],
        }


def refusal_score(model, tokenizer, prompts: Sequence[Prompt], options: SearchOptions) -> float:
    """The mean refusal log-odds of ``prompts`` under ``options.score`` (see :class:`SearchOptions`)."""
    kw = {"batch_size": options.batch_size, "chat": options.chat}
    if options.score == "first_token":
        logprobs = first_token_logprobs(model, tokenizer, prompts, **kw)
        return float(refusal_scores(logprobs, refusal_token_ids(tokenizer, options.refusal_openings)).mean())
    if options.score == "opening":
        seqs = opening_token_ids(tokenizer, options.refusal_openings)
        log_p = torch.logsumexp(opening_logprobs(model, tokenizer, prompts, seqs, **kw), dim=-1)
        return float(log_odds(log_p).mean())
    raise ValueError(f"`score` (={options.score!r}) must be 'first_token' or 'opening'")


def _split(prompts: Sequence[Prompt], holdout: float, seed: int, what: str) -> tuple[list[Prompt], list[Prompt]]:
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"`holdout` (={holdout}) must be a fraction in (0, 1)")
    items = list(prompts)
    if len(items) < 4:
        raise ValueError(f"{len(items)} {what} prompts are too few: give at least 4 (some define the "
                         "directions, the held-out rest judges them)")
    random.Random(f"{seed}:{what}").shuffle(items)
    n_held = min(max(1, round(holdout * len(items))), len(items) - 2)
    return items[n_held:], items[:n_held]


def _allowed_layers(num_layers: int, options: SearchOptions) -> list[int]:
    # Arditi et al. keep l < 0.8 L; the tolerance keeps 0.8 · 30 = 24.000000000000004 from admitting layer 24
    cutoff = max(1, math.ceil((1.0 - options.exclude_last) * num_layers - 1e-9))
    if options.layer is not None:
        if not 0 <= options.layer < num_layers:
            raise ValueError(f"`layer` (={options.layer}) must be in [0, {num_layers}) for this model")
        return [options.layer]
    layers = list(options.layers) if options.layers is not None else list(range(cutoff))
    bad = [layer for layer in layers if not 0 <= layer < cutoff]
    if bad or not layers:
        raise ValueError(f"`layers` (={options.layers}) must be non-empty and within [0, {cutoff}): the last "
                         f"{options.exclude_last:.0%} of the {num_layers} layers are excluded")
    return layers


@torch.no_grad()
def find_refusal_direction(
    lm, harmful: Sequence[Prompt], harmless: Sequence[Prompt], options: SearchOptions | None = None,
    *, progress: Callable[[int, int], None] | None = None,
) -> DirectionSearch:
    """Find the refusal direction of a safety-tuned model ``lm`` (a :class:`~tailscope.models.LoadedModel`).

    Args:
        lm: the model and its tokenizer; not modified (ablation is done with hooks).
        harmful: prompts the model should refuse; harmless: prompts it should answer.
        options: see :class:`SearchOptions`.
        progress: called with (candidates done, candidates in all) after each candidate.

    Raises:
        NoCandidateError: no candidate passes the KL bound (the error gives the smallest KL seen).
    """
    opts = options or SearchOptions()
    if opts.score not in ("first_token", "opening"):
        raise ValueError(f"`score` (={opts.score!r}) must be 'first_token' or 'opening'")
    model, tok = lm.model, lm.tokenizer
    layout = residual_layout(model)
    k = opts.positions or min(post_instruction_length(tok, opts.chat), 8)
    if opts.position is not None and not -k <= opts.position <= -1:
        raise ValueError(f"`position` (={opts.position}) must be in [-{k}, -1] (the post-instruction positions)")
    layers = _allowed_layers(layout.num_layers, opts)
    harm_fit, harm_val = _split(harmful, opts.holdout, opts.seed, "harmful")
    safe_fit, safe_val = _split(harmless, opts.holdout, opts.seed, "harmless")
    kw = {"batch_size": opts.batch_size, "chat": opts.chat}

    harm_mean = mean_activations(model, tok, harm_fit, k, **kw)
    safe_mean = mean_activations(model, tok, safe_fit, k, **kw)
    diffs = harm_mean - safe_mean
    if opts.projected:
        unit_safe = safe_mean / safe_mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        diffs = diffs - (diffs * unit_safe).sum(-1, keepdim=True) * unit_safe

    token_ids = (refusal_token_ids(tok, opts.refusal_openings) if opts.score == "first_token"
                 else opening_token_ids(tok, opts.refusal_openings))
    base_harm = refusal_score(model, tok, harm_val, opts)
    base_harmless = refusal_score(model, tok, safe_val, opts)
    base_safe = first_token_logprobs(model, tok, safe_val, **kw)
    pos_list = [opts.position] if opts.position is not None else list(range(-k, 0))
    pairs = [(layer, p) for layer in layers for p in pos_list]
    candidates: list[Candidate] = []
    for done, (layer, p) in enumerate(pairs, 1):
        r = diffs[layer, k + p]
        norm = float(r.norm())
        scale = float(harm_mean[layer, k + p].norm()) + 1e-12
        if norm < 1e-6 * scale:
            # the same template tokens in both sets, before any layer has mixed in the prompt
            candidates.append(Candidate(layer, p, norm, eligible=False, note="zero direction"))
        else:
            with ablate_direction(model, r):
                score = refusal_score(model, tok, harm_val, opts)
                safe = first_token_logprobs(model, tok, safe_val, **kw)
            kl = harmless_kl(base_safe, safe)
            ok = opts.layer is not None or kl <= opts.max_kl
            candidates.append(Candidate(layer, p, norm, score, kl, ok, "" if ok else f"KL > {opts.max_kl:g}"))
        if progress is not None:
            progress(done, len(pairs))

    ranked = [c for c in candidates if c.eligible and c.refusal_score is not None and math.isfinite(c.refusal_score)]
    if not ranked:
        kls = [c.kl for c in candidates if c.kl is not None]
        raise NoCandidateError(
            f"none of {len(candidates)} candidates keeps the KL on harmless prompts within {opts.max_kl:g} "
            f"(smallest: {min(kls) if kls else float('nan'):.3g}); raise `max_kl`, force a `layer`, or give "
            "more prompts"
        )
    best = min(ranked, key=lambda c: c.refusal_score)
    direction = diffs[best.layer, k + best.position].float()
    return DirectionSearch(
        direction=direction / direction.norm(), layer=best.layer, position=best.position, candidates=candidates,
        baseline_refusal_score=base_harm, baseline_harmless_refusal_score=base_harmless,
        num_layers=layout.num_layers, positions=k,
        splits={"harmful_fit": len(harm_fit), "harmful_heldout": len(harm_val),
                "harmless_fit": len(safe_fit), "harmless_heldout": len(safe_val)},
        options=opts, refusal_token_ids=token_ids, heldout_harmful=harm_val, heldout_harmless=safe_val,
        baseline_harmless_logprobs=base_safe,
    )
