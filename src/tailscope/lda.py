"""Logit diff amplification sweeps: detection, not measurement (METHODS.md §1–2).

For each amplification a, sample at α = 1 + a (l_after + a (l_after − l_before)), judge, and
report the behaviour's rate with an exact interval, a coherence measure, and examples that
triggered the judge — so a user can pick the largest amplification that still reads as fluent
text. The rate at a > 0 says the behaviour exists and how it looks; it is not the after model's rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from .estimators import clopper_pearson, judge_text, zero_hit_upper_bound
from .path import Proposal
from .prompts import Prompt
from .sampling import PathSampler, Rollout

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
    sampler: PathSampler,
    judge,
    prompts: Sequence[Prompt],
    amplifications: Sequence[float],
    n: int,
    *,
    store=None,
    examples: int = 3,
    confidence: float = 0.95,
    progress: Callable[[int], None] | None = None,
) -> list[SweepPoint]:
    """Sample ``n`` rollouts per prompt at each amplification (α = 1 + a) and judge them.

    With a :class:`~tailscope.store.RunStore` the rollouts and verdicts are stored and reused.
    """
    if n < 1:
        raise ValueError(f"`n` (={n}) must be >= 1")
    points = []
    for a in amplifications:
        proposal = Proposal(alpha=1.0 + float(a))
        if store is not None:
            by_prompt = store.get_or_sample_many(sampler, prompts, proposal, n, progress=progress)
            rollouts = [r for p in prompts for r in by_prompt[p.id]]
            verdicts = store.judge(judge, rollouts)
        else:
            rollouts = sampler.sample(prompts, n, proposal, progress=progress)
            texts = {p.id: judge_text(p) for p in prompts}
            verdicts = judge.judge([(texts[r.prompt_id], r.text) for r in rollouts])
        per_prompt: dict[str, dict[str, int]] = {}
        shown: list[dict[str, str]] = []
        for r, v in zip(rollouts, verdicts):
            row = per_prompt.setdefault(r.prompt_id, {"n": 0, "hits": 0})
            if v.flagged is None:
                continue
            row["n"] += 1
            row["hits"] += int(v.flagged)
            if v.flagged and len(shown) < examples:
                shown.append({"prompt_id": r.prompt_id, "seed_index": str(r.seed_index), "text": r.text})
        judged = sum(p["n"] for p in per_prompt.values())
        hits = sum(p["hits"] for p in per_prompt.values())
        interval = (0.0, zero_hit_upper_bound(judged, confidence)) if hits == 0 else clopper_pearson(hits, judged, confidence)
        after, ppl, length = _coherence(rollouts)
        points.append(SweepPoint(float(a), proposal.alpha, len(rollouts), hits, len(rollouts) - judged,
                                 hits / judged if judged else 0.0, interval, after, ppl, length, per_prompt, shown))
    return points
