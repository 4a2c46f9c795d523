"""Weighted-mean statistics shared by the importance-sampling estimators."""

from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from scipy.special import logsumexp

from ._interval import Interval, interval_rule
from ._pareto import pareto_khat

__all__ = ["hit_interval", "log_interval", "raised", "weight_diagnostics"]


def log_interval(mean: float, se: float, confidence: float) -> tuple[float, float]:
    """An interval for a positive mean from its standard error, symmetric on the log scale
    (delta method): mean · exp(± z · se / mean). Never below 0, never collapsed while se > 0."""
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    if mean <= 0:
        return (0.0, 0.0)
    spread = math.exp(z * se / mean) if se > 0 else 1.0
    return (mean / spread, mean * spread)


def hit_interval(mean: float, se: float, hits: float, confidence: float, tail_decades: float = 0.0) -> Interval:
    """The envelope of two intervals for a weighted rate estimate resting on ``hits`` hits.

    * the standard-error interval, symmetric on the log scale (:func:`log_interval`);
    * the count interval: μ̂ scaled by the exact Poisson bounds on the hit count over the count,
      μ̂ · [L(k)/k, U(k)/k]. With few hits the sample standard error is itself unreliable (one
      hit gives no spread at all); the count interval keeps the interval honest there.

    Pass the *effective* number of hits, ``min(hits, ess_hits)`` (Kish's (Σw)²/Σw² over the hits'
    weights): when one heavy weight carries the estimate, a thousand light hits elsewhere do not
    make it any surer, and the interval should be as wide as one hit's.

    ``tail_decades`` raises the upper end by that many decades: the share of a heavy-tailed
    weighted mean that the sample has not yet seen (path MIS, :data:`~tailscope.estimators.mis.TAIL_WIDENING`).
    """
    basis = {"mean": mean, "standard_error": se, "effective_hits": hits, "tail_decades": tail_decades}
    lo_se, hi_se = log_interval(mean, se, confidence)
    if hits <= 0 or mean <= 0:
        return Interval(lo_se, raised(hi_se, tail_decades), confidence, "weighted", basis)
    tail = (1 - confidence) / 2
    lo_k = stats.chi2.ppf(tail, 2 * hits) / 2
    hi_k = stats.chi2.ppf(1 - tail, 2 * hits + 2) / 2
    return Interval(float(min(lo_se, mean * lo_k / hits)), raised(float(max(hi_se, mean * hi_k / hits)), tail_decades),
                    confidence, "weighted", basis)


def raised(high: float, decades: float) -> float:
    """``high`` raised by ``decades``, no further than a rate can go (1), never lowered."""
    return max(high, min(1.0, high * 10**decades)) if decades > 0 else high


@interval_rule("weighted")
def _rebuild_weighted(basis: Mapping[str, Any], confidence: float) -> Interval:
    return hit_interval(basis["mean"], basis["standard_error"], basis["effective_hits"], confidence,
                        basis.get("tail_decades", 0.0))


def weight_diagnostics(log_w: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """The weights' diagnostics, over all samples and over the hits (``flagged``).

    * ``ess``, ``ess_hits``: Kish's effective sample size (Σw)²/Σw²;
    * ``max_weight_share``: the largest hit weight over the hits' total;
    * ``khat``, ``khat_hits``: Pareto k̂ of the weights' upper tail (:func:`pareto_khat`): over all
      samples it says whether the proposal covers the target (heavy tails there mean regions of
      large weight, maybe holding unseen hits), over the hits whether the mean's variance exists;
    * ``log10_weight_mean``: log10 of the mean weight, whose expectation is exactly 1 (0 here)
      for any proposal with full support: far below 0, much of the target was never sampled.
    """
    if log_w.size == 0:
        return {"ess": 0.0, "ess_hits": 0.0, "max_weight_share": 0.0}
    shift = log_w.max()
    w = np.exp(log_w - shift)
    tails = {"khat": pareto_khat(log_w, log=True), "khat_hits": pareto_khat(log_w[flagged], log=True),
             "log10_weight_mean": float((logsumexp(log_w) - math.log(log_w.size)) / math.log(10))}
    ess = float(w.sum() ** 2 / (w**2).sum())
    hw = w[flagged]
    if hw.size == 0 or hw.sum() == 0:
        return {"ess": ess, "ess_hits": 0.0, "max_weight_share": 0.0, **tails}
    return {"ess": ess, "ess_hits": float(hw.sum() ** 2 / (hw**2).sum()), "max_weight_share": float(hw.max() / hw.sum()),
            **tails}
