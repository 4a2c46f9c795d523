"""Scoring estimators against ground truth: AUROC vs budget, rollout savings, error and coverage."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["auroc", "error_and_coverage", "evenly_in_log_rate", "matching_budget", "naive_auroc_curve", "bootstrap_band"]


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann–Whitney), ties counted one half; NaN without both classes."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def label_probability(rates: np.ndarray, horizon: int) -> np.ndarray:
    """P(at least one hit in ``horizon`` rollouts) = 1 − (1 − p)^horizon, computed stably."""
    return -np.expm1(horizon * np.log1p(-np.minimum(rates, 1 - 1e-16)))


def naive_auroc_curve(
    rates: np.ndarray, labels: np.ndarray, budgets: Sequence[int], draws: int = 200, seed: int = 0
) -> dict[int, np.ndarray]:
    """Naive sampling's AUROC at each budget, simulated exactly: its score is a Binomial(n, p) hit count.

    Returns, per budget, the AUROC of each of ``draws`` simulated experiments (the labels fixed).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for n in budgets:
        out[int(n)] = np.array([auroc(rng.binomial(int(n), rates), labels) for _ in range(draws)])
    return out


def bootstrap_band(scores: np.ndarray, labels: np.ndarray, reps: int = 500, seed: int = 0,
                   level: float = 0.9) -> tuple[float, float]:
    """Bootstrap band over prompts for the AUROC of fixed scores."""
    rng = np.random.default_rng(seed)
    vals = []
    n = len(scores)
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        v = auroc(scores[idx], labels[idx])
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return (math.nan, math.nan)
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def matching_budget(curve: dict[int, float], level: float) -> float | None:
    """The smallest budget at which a (monotone-interpolated, log-budget) AUROC curve reaches ``level``."""
    pts = sorted((b, v) for b, v in curve.items() if not math.isnan(v))
    best = -math.inf
    prev = None
    for b, v in pts:
        v = max(v, best)  # the running maximum: a larger budget can always ignore extra rollouts
        if v >= level:
            if prev is None or prev[1] >= level:
                return float(b)
            (b0, v0) = prev
            t = (level - v0) / (v - v0) if v > v0 else 1.0
            return float(math.exp(math.log(b0) + t * (math.log(b) - math.log(b0))))
        best = v
        prev = (b, v)
    return None


def evenly_in_log_rate(rates: dict[str, float], k: int) -> list[str]:
    """``k`` of the ids in ``rates`` (id -> rate > 0) evenly spaced in log rate, sorted by rate;
    all of them when there are at most ``k``. Small runs still see the whole spread."""
    logs = {i: math.log10(r) for i, r in rates.items()}
    if len(logs) <= k:
        return sorted(logs, key=logs.get)
    chosen: list[str] = []
    for t in np.linspace(min(logs.values()), max(logs.values()), k):
        chosen.append(min((i for i in logs if i not in chosen), key=lambda i: abs(logs[i] - t)))
    return sorted(chosen, key=logs.get)


def error_and_coverage(estimates: Sequence, truths: Sequence[float]) -> dict[str, float | int | None]:
    """Median |log10(estimate / truth)| (point estimates only), coverage, and how many were bounds only."""
    errs, cover, bounds = [], [], 0
    for e, t in zip(estimates, truths):
        cover.append(e.interval[0] <= t <= e.interval[1])
        if e.upper_bound_only or e.rate <= 0:
            bounds += 1
        else:
            errs.append(abs(math.log10(e.rate / t)))
    return {
        "prompts": len(cover),
        "median_abs_log10_error": float(np.median(errs)) if errs else None,
        "within_factor_3": float(np.mean([x <= math.log10(3) for x in errs])) if errs else None,
        "coverage": float(np.mean(cover)) if cover else None,
        "upper_bounds_only": bounds,
    }
