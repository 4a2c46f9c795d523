"""Tail forecasting across prompts (Jones et al. 2025; METHODS.md §2).

From per-prompt elicitation probabilities p_i, scores ψ_i = −log(−log p_i); the survival function
of the scores is fitted in its tail as log S(ψ) ≈ a ψ + b, and the largest elicitation
probability among n queries is forecast as exp(−exp(−Q(n))), Q(n) = −(log n + b)/a.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TailForecast", "forecast"]


@dataclass(frozen=True)
class TailForecast:
    """A fitted tail and its forecasts of the worst-query probability at several query counts."""

    slope: float
    intercept: float
    tail_size: int
    prompts: int
    worst_query: dict[int, float]
    interval: dict[int, tuple[float, float]]

    def to_dict(self) -> dict:
        return {"method": "forecast", "slope": self.slope, "intercept": self.intercept, "tail_size": self.tail_size,
                "prompts": self.prompts, "worst_query": {str(k): v for k, v in self.worst_query.items()},
                "interval": {str(k): list(v) for k, v in self.interval.items()}}


def _fit(psi: np.ndarray, tail_size: int) -> tuple[float, float]:
    top = np.sort(psi)[::-1][:tail_size]
    surv = np.arange(1, len(top) + 1) / len(psi)  # S(ψ_(i)) = i / m for the i-th largest score
    a, b = np.polyfit(top, np.log(surv), 1)
    return float(a), float(b)


def _worst(a: float, b: float, n: int) -> float:
    q = -(math.log(n) + b) / a
    return math.exp(-math.exp(-q))


def forecast(
    probabilities: Sequence[float],
    queries: Sequence[int] = (10**3, 10**4, 10**5, 10**6),
    *,
    tail_fraction: float = 0.1,
    min_tail: int = 10,
    bootstrap: int = 500,
    confidence: float = 0.9,
    seed: int = 0,
) -> TailForecast:
    """Forecast the largest per-query elicitation probability among ``n`` queries for each n in ``queries``.

    Probabilities of exactly 0 or 1 carry no tail information and are clipped into (1e-300, 1 − 1e-16).
    The interval is a bootstrap over prompts.
    """
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-300, 1 - 1e-16)
    if p.size < min_tail:
        raise ValueError(f"a tail forecast needs at least {min_tail} prompts, got {p.size}")
    tail = max(min_tail, int(round(tail_fraction * p.size)))
    psi = -np.log(-np.log(p))
    a, b = _fit(psi, tail)
    if a >= 0:
        raise ValueError("the fitted tail does not decay (slope >= 0); the scores have no usable tail")
    rng = np.random.default_rng(seed)
    draws: dict[int, list[float]] = {n: [] for n in queries}
    for _ in range(bootstrap):
        ab, bb = _fit(rng.choice(psi, psi.size, replace=True), tail)
        if ab < 0:
            for n in queries:
                draws[n].append(_worst(ab, bb, n))
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    interval = {n: (float(np.quantile(d, lo_q)), float(np.quantile(d, hi_q))) if d else (0.0, 1.0)
                for n, d in draws.items()}
    return TailForecast(a, b, tail, int(p.size), {n: _worst(a, b, n) for n in queries}, interval)
