"""Naive Monte Carlo: sample the target, count hits (METHODS.md §2)."""

from __future__ import annotations

from ..path import Proposal
from ..prompts import Prompt
from ._estimate import Estimate, clopper_pearson, zero_hit_upper_bound
from ._source import RolloutSource

__all__ = ["naive"]


def naive(source: RolloutSource, prompt: Prompt, budget: int, *, confidence: float = 0.95) -> Estimate:
    """μ̂ = k/n from ``budget`` rollouts of the target, with a Clopper–Pearson interval.

    Zero hits give the one-sided exact upper bound 1 − (1 − c)^(1/n) (≈ 3/n at 95%).
    """
    if budget < 1:
        raise ValueError(f"`budget` (={budget}) must be >= 1")
    target = Proposal(1.0)
    obs = source.draw(prompt, target, budget)
    judged = [o.flagged for o in obs if o.flagged is not None]
    k, n = sum(judged), len(judged)
    failed = len(obs) - n
    if k == 0:
        return Estimate("naive", prompt.id, 0.0, (0.0, zero_hit_upper_bound(n, confidence)), confidence,
                        {target.key: len(obs)}, 0, failed, True, {"budget": budget})
    return Estimate("naive", prompt.id, k / n, clopper_pearson(k, n, confidence), confidence,
                    {target.key: len(obs)}, k, failed, False, {"budget": budget})
