"""The one result type of every low-probability estimator (METHODS.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tailscope.estimators._interval import Interval

__all__ = ["LowProbEstimate"]


@dataclass(frozen=True)
class LowProbEstimate:
    """An estimate of p = P_{x∼D}[argmax M(x) = t].

    Attributes:
        method: the estimator's registered name.
        target: the target token id t.
        estimate: p̂ (may underflow to 0.0 for extrapolation methods; see ``log_estimate``).
        log_estimate: ln p̂, kept separately because extrapolations reach far below 1e-300.
        calls: model calls spent (a forward pass over one input is one call, a backward pass one more).
        budget: the calls the estimator was allowed.
        seed: the seed of its random generator.
        diagnostics: method-specific numbers (hits, effective sample size, acceptance rate, ...).
        interval: the interval on p̂ from its sampling error (``.low``, ``.high``, ``.confidence``):
            exact binomial for ``naive``, standard error with a hit-count envelope for ``itgis`` (None
            when it saw no hits).
            None for ``mhis``, ``qld`` and ``gld``, whose error is that of a fitted model of the
            score distribution, not sampling noise; the benchmark scores them against the truth.
    """

    method: str
    target: int
    estimate: float
    log_estimate: float
    calls: int
    budget: int
    seed: int
    diagnostics: dict[str, Any] = field(default_factory=dict)
    interval: Interval | None = None

    @classmethod
    def from_log(cls, method: str, target: int, log_estimate: float, **kwargs: Any) -> LowProbEstimate:
        return cls(method, target, math.exp(log_estimate) if log_estimate > -745 else 0.0, float(log_estimate),
                   **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "target": self.target, "estimate": self.estimate,
                "log_estimate": self.log_estimate, "calls": self.calls, "budget": self.budget, "seed": self.seed,
                "diagnostics": self.diagnostics,
                "interval": None if self.interval is None else [self.interval.low, self.interval.high],
                "confidence": None if self.interval is None else self.interval.confidence}
