"""The one result type of every estimator, and the binomial intervals they share (METHODS.md §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

__all__ = ["Estimate", "clopper_pearson", "zero_hit_upper_bound"]


@dataclass(frozen=True)
class Estimate:
    """A rate estimate for one prompt: the value, its interval and what it cost.

    Attributes:
        method: ``naive``, ``is``, ``mis``, ``lpe`` (or ``forecast`` across prompts).
        prompt_id: the prompt estimated (None for a cross-prompt forecast).
        rate: the point estimate of μ = P_{y∼q_1}[f(y) = 1]. With ``upper_bound_only`` it is 0 and
            only ``interval[1]`` carries information.
        interval: (low, high) at ``confidence``; never collapsed to a point.
        confidence: the interval's level (0.95 by default).
        rollouts: rollouts spent, by proposal key (``a=0.3``, ``a=0;switch=8``, …).
        hits: rollouts the judge flagged, over all proposals.
        failed: rollouts the judge could not judge (left out of every count, not read as "no").
        upper_bound_only: no hits were seen: the interval is a one-sided upper bound.
        settings: the estimator's settings, for the record.
        diagnostics: method-specific: IS effective sample size and largest weight share; LPE
            fitted curve, points and residuals; …
    """

    method: str
    prompt_id: str | None
    rate: float
    interval: tuple[float, float]
    confidence: float = 0.95
    rollouts: dict[str, int] = field(default_factory=dict)
    hits: int = 0
    failed: int = 0
    upper_bound_only: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        low, high = self.interval
        if not (0.0 <= low <= high) or math.isnan(high):
            raise ValueError(f"interval {self.interval} is not an ordered pair of non-negative numbers")
        if not 0 < self.confidence < 1:
            raise ValueError(f"`confidence` (={self.confidence}) must be in (0, 1)")

    @property
    def total_rollouts(self) -> int:
        return sum(self.rollouts.values())

    def covers(self, truth: float) -> bool:
        return self.interval[0] <= truth <= self.interval[1]

    def describe(self) -> str:
        """A short human form: ``3.1e-05 [1.2e-05, 8.0e-05]`` or ``< 3.0e-03 (0 hits)``."""
        if self.upper_bound_only:
            return f"< {self.interval[1]:.2g} (0 hits)"
        return f"{self.rate:.2g} [{self.interval[0]:.2g}, {self.interval[1]:.2g}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "prompt_id": self.prompt_id, "rate": self.rate,
            "interval": list(self.interval), "confidence": self.confidence, "rollouts": dict(self.rollouts),
            "total_rollouts": self.total_rollouts, "hits": self.hits, "failed": self.failed,
            "upper_bound_only": self.upper_bound_only, "settings": self.settings, "diagnostics": self.diagnostics,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        keys = {f for f in cls.__dataclass_fields__}
        body = {k: v for k, v in d.items() if k in keys}
        body["interval"] = tuple(body["interval"])
        return cls(**body)


def zero_hit_upper_bound(n: int, confidence: float = 0.95) -> float:
    """One-sided exact upper bound on a rate after 0 hits in n trials: 1 − (1 − c)^(1/n) ≈ 3/n at 95%."""
    if n <= 0:
        return 1.0
    return -math.expm1(math.log1p(-confidence) / n)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval; k = 0 and k = n handled explicitly."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"hits (={k}) must be between 0 and n (={n})")
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return (low, high)
