"""Confidence intervals for rates: the result type and the exact binomial bounds (METHODS.md §2).

An :class:`Interval` records how it was built (``method``) and from what (``basis``), so that
:func:`rebuild` can give the same construction at another confidence level — the way
``scipy.stats.binomtest(...).proportion_ci(confidence_level=...)`` does. Constructions that
cannot be rebuilt from a few numbers (a bootstrap) say so when asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

__all__ = ["Interval", "clopper_pearson", "interval_rule", "rebuild", "zero_hit_upper_bound"]


@dataclass(frozen=True)
class Interval:
    """A confidence interval [low, high] at level ``confidence``.

    It unpacks and indexes like the pair it is (``low, high = est.interval``, ``est.interval[1]``).

    Attributes:
        low, high: the ends, 0 <= low <= high; never collapsed to a point by construction.
        confidence: the level, in (0, 1).
        method: the construction (``clopper-pearson``, ``zero-hit bound``, ``weighted``, ...).
        basis: the statistics it was built from, enough for :func:`rebuild` at another level.
    """

    low: float
    high: float
    confidence: float = 0.95
    method: str = ""
    basis: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if math.isnan(self.low) or math.isnan(self.high) or not 0.0 <= self.low <= self.high:
            raise ValueError(f"interval ({self.low}, {self.high}) is not an ordered pair of non-negative numbers")
        if not 0 < self.confidence < 1:
            raise ValueError(f"`confidence` (={self.confidence}) must be in (0, 1)")

    def __iter__(self) -> Iterator[float]:
        return iter((self.low, self.high))

    def __getitem__(self, i: int) -> float:
        return (self.low, self.high)[i]

    def __len__(self) -> int:
        return 2

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "confidence": self.confidence, "method": self.method,
                "basis": dict(self.basis)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Interval:
        return cls(float(d["low"]), float(d["high"]), float(d.get("confidence", 0.95)), d.get("method", ""),
                   dict(d.get("basis") or {}))


Rule = Callable[[Mapping[str, Any], float], Interval]
_RULES: dict[str, Rule] = {}


def interval_rule(method: str) -> Callable[[Rule], Rule]:
    """Register how intervals of construction ``method`` are rebuilt from their basis at a level."""

    def wrap(fn: Rule) -> Rule:
        if method in _RULES:
            raise ValueError(f"an interval rule named {method!r} is already registered")
        _RULES[method] = fn
        return fn

    return wrap


def rebuild(interval: Interval, confidence: float) -> Interval:
    """The same construction as ``interval`` at level ``confidence``.

    Raises:
        ValueError: the construction cannot be rebuilt from its basis (rerun the estimator with
            ``confidence=...`` instead).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` (={confidence}) must be in (0, 1)")
    rule = _RULES.get(interval.method)
    if rule is None:
        raise ValueError(f"a {interval.method or 'plain'!r} interval cannot be rebuilt at another level; "
                         f"rerun the estimator with confidence={confidence}")
    return rule(interval.basis, confidence)


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


@interval_rule("clopper-pearson")
def binomial_interval(basis: Mapping[str, Any], confidence: float) -> Interval:
    """Clopper–Pearson for k hits of n; with k = 0 the one-sided exact bound 1 − (1 − c)^(1/n)."""
    k, n = int(basis["hits"]), int(basis["n"])
    if k == 0:
        return Interval(0.0, zero_hit_upper_bound(n, confidence), confidence, "clopper-pearson", {"hits": 0, "n": n})
    return Interval(*clopper_pearson(k, n, confidence), confidence, "clopper-pearson", {"hits": k, "n": n})
