"""The registry of low-probability estimators, all called the same way (METHODS.md §3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.extrapolation import gld, qld
from tailscope.lowprob.itgis import itgis
from tailscope.lowprob.lm import LowProbModel
from tailscope.lowprob.mhis import mhis
from tailscope.lowprob.naive import naive
from tailscope.lowprob.result import LowProbEstimate

__all__ = ["ESTIMATORS", "estimate"]

Estimator = Callable[..., LowProbEstimate]

ESTIMATORS: dict[str, Estimator] = {"naive": naive, "itgis": itgis, "mhis": mhis, "qld": qld, "gld": gld}


def estimate(method: str, lm: LowProbModel, dist: InputDistribution, target: int, budget: int, *, seed: int = 0,
             **options: Any) -> LowProbEstimate:
    """Run estimator ``method`` with at most ``budget`` model calls, enforced by the model wrapper.

    Args:
        method: one of ``ESTIMATORS``.
        lm: the wrapped model; its call counter is reset to this budget.
        dist: the input distribution.
        target: target token id.
        budget: model calls allowed (forward and backward passes each count).
        seed: seed of the estimator's generator.
        **options: method-specific settings (e.g. ``temperature``).
    """
    if method not in ESTIMATORS:
        raise KeyError(f"unknown estimator {method!r}; choose one of {sorted(ESTIMATORS)}")
    if budget < 1:
        raise ValueError(f"`budget` (={budget}) must be a positive number of model calls")
    lm.reset(budget)
    try:
        result = ESTIMATORS[method](lm, dist, target, budget, seed=seed, **options)
    finally:
        used = lm.calls
        lm.reset(None)
    if used != result.calls:
        raise RuntimeError(f"{method} reported {result.calls} calls but the model counted {used}")
    return result
