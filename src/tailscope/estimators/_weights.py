"""Weighted-mean statistics shared by the importance-sampling estimators."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["hit_interval", "log_interval", "weight_diagnostics"]


def log_interval(mean: float, se: float, confidence: float) -> tuple[float, float]:
    """An interval for a positive mean from its standard error, symmetric on the log scale
    (delta method): mean · exp(± z · se / mean). Never below 0, never collapsed while se > 0."""
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    if mean <= 0:
        return (0.0, 0.0)
    spread = math.exp(z * se / mean) if se > 0 else 1.0
    return (mean / spread, mean * spread)


def hit_interval(mean: float, se: float, hits: float, confidence: float) -> tuple[float, float]:
    """The envelope of two intervals for a weighted rate estimate resting on ``hits`` hits.

    * the standard-error interval, symmetric on the log scale (:func:`log_interval`);
    * the count interval: μ̂ scaled by the exact Poisson bounds on the hit count over the count,
      μ̂ · [L(k)/k, U(k)/k]. With few hits the sample standard error is itself unreliable (one
      hit gives no spread at all); the count interval keeps the interval honest there.

    Pass the *effective* number of hits, ``min(hits, ess_hits)`` (Kish's (Σw)²/Σw² over the hits'
    weights): when one heavy weight carries the estimate, a thousand light hits elsewhere do not
    make it any surer, and the interval should be as wide as one hit's.
    """
    lo_se, hi_se = log_interval(mean, se, confidence)
    if hits <= 0 or mean <= 0:
        return (lo_se, hi_se)
    tail = (1 - confidence) / 2
    lo_k = stats.chi2.ppf(tail, 2 * hits) / 2
    hi_k = stats.chi2.ppf(1 - tail, 2 * hits + 2) / 2
    return (min(lo_se, mean * lo_k / hits), max(hi_se, mean * hi_k / hits))


def weight_diagnostics(log_w: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Effective sample size (Σw)²/Σw² over all samples and over hits, and the largest hit weight's share."""
    if log_w.size == 0:
        return {"ess": 0.0, "ess_hits": 0.0, "max_weight_share": 0.0}
    shift = log_w.max()
    w = np.exp(log_w - shift)
    ess = float(w.sum() ** 2 / (w**2).sum())
    hw = w[flagged]
    if hw.size == 0 or hw.sum() == 0:
        return {"ess": ess, "ess_hits": 0.0, "max_weight_share": 0.0}
    return {"ess": ess, "ess_hits": float(hw.sum() ** 2 / (hw**2).sum()), "max_weight_share": float(hw.max() / hw.sum())}
