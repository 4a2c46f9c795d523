"""Logit diff amplification sweeps: detection, not measurement (METHODS.md §1–2).

For each amplification a, sample at α = 1 + a (l_after + a (l_after − l_before)), judge, and
report the behaviour's rate with an exact interval, a coherence measure, and examples that
triggered the judge — so a user can pick the largest amplification that still reads as fluent
text. The rate at a > 0 says the behaviour exists and how it looks; it is not the after model's rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .estimators import RolloutSource, clopper_pearson, zero_hit_upper_bound
from .prompts import Prompt
from .rollout import Proposal, Rollout

__all__ = ["SweepPoint", "lda_sweep"]


@dataclass
class SweepPoint:
    """The behaviour at one amplification, pooled over prompts."""

    amplification: float
    alpha: float
    rollouts: int
    hits: int
    failed: int
    rate: float
    interval: tuple[float, float]
    logprob_after_per_token: float
    perplexity_before: float
    mean_length: float
    per_prompt: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def rollouts_per_hit(self) -> float:
        """Expected rollouts to see the behaviour once (1 / rate); inf with no hits."""
        return 1 / self.rate if self.rate > 0 else math.inf

    def to_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval)
        d["rollouts_per_hit"] = self.rollouts_per_hit if self.rate > 0 else None
        return d


def _coherence(rollouts: Sequence[Rollout]) -> tuple[float, float, float]:
    tokens = sum(len(r.token_ids) for r in rollouts)
    if not tokens:
        return (math.nan, math.nan, 0.0)
    after = sum(r.logprob_target for r in rollouts) / tokens
    before = sum(r.logprob_reference for r in rollouts) / tokens
    return after, math.exp(-before), tokens / len(rollouts)


def lda_sweep(
    source: RolloutSource,
    prompts: Sequence[Prompt],
    amplifications: Sequence[float],
    n: int,
    *,
    examples: int = 3,
    confidence: float = 0.95,
) -> list[SweepPoint]:
    """Draw ``n`` judged rollouts per prompt at each amplification (α = 1 + a) from ``source``.

    A :class:`~tailscope.estimators.StoreSource` stores the rollouts and verdicts (resumable); a
    :class:`~tailscope.estimators.LiveSource` keeps them in memory. Progress goes to the source's.
    """
    if n < 1:
        raise ValueError(f"`n` (={n}) must be >= 1")
    points = []
    for a in amplifications:
        proposal = Proposal(alpha=1.0 + float(a))
        by_prompt = source.draw_many(prompts, proposal, n)
        observed = [o for p in prompts for o in by_prompt[p.id]]
        per_prompt: dict[str, dict[str, int]] = {}
        shown: list[dict[str, str]] = []
        for o in observed:
            r = o.rollout
            row = per_prompt.setdefault(r.prompt_id, {"n": 0, "hits": 0})
            if o.flagged is None:
                continue
            row["n"] += 1
            row["hits"] += int(o.flagged)
            if o.flagged and len(shown) < examples:
                shown.append({"prompt_id": r.prompt_id, "seed_index": str(r.seed_index), "text": r.text})
        judged = sum(p["n"] for p in per_prompt.values())
        hits = sum(p["hits"] for p in per_prompt.values())
        interval = (0.0, zero_hit_upper_bound(judged, confidence)) if hits == 0 else clopper_pearson(hits, judged, confidence)
        after, ppl, length = _coherence([o.rollout for o in observed])
        points.append(SweepPoint(float(a), proposal.alpha, len(observed), hits, len(observed) - judged,
                                 hits / judged if judged else 0.0, interval, after, ppl, length, per_prompt, shown))
    return points
