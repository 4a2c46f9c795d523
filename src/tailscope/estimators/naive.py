"""Naive Monte Carlo: sample the target, count hits (METHODS.md §2)."""

from __future__ import annotations

from ..rollout import Proposal
from ..prompts import Prompt
from ._estimate import Estimate
from ._interval import binomial_interval
from ._registry import register_estimator
from ._source import RolloutSource

__all__ = ["naive"]


@register_estimator("naive")
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
    return Estimate(method="naive", prompt_id=prompt.id, rate=k / n if k else 0.0,
                    interval=binomial_interval({"hits": k, "n": n}, confidence), rollouts={target.key: len(obs)},
                    hits=k, failed=len(obs) - n, upper_bound_only=k == 0, settings={"budget": budget})
