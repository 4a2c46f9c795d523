"""Logit Path Extrapolation (LPE, METHODS.md §2).

Measure the behaviour's rate r_j at path points α_j ∈ [0, 1) where it is common, fit a smooth
trend by binomial likelihood — logit r(α) or log r(α) a low-degree polynomial in α — on the
points where hits are seen, and evaluate it at α = 1. The interval is a parametric bootstrap of
the fit: it covers the sampling noise of the points, not the error of the trend's shape, which the
evaluation harness measures against ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import expit, log_expit

from ..prompts import Prompt
from ._estimate import Estimate
from ._source import RolloutSource
from .mis import monotone_upper_bound
from .schedule import DEFAULT_GRID, summarize, walk_path

__all__ = ["FAMILIES", "PathFit", "fit_path", "lpe"]

Family = Literal["log-linear", "logit-linear", "log-quadratic", "logit-quadratic"]
FAMILIES: tuple[str, ...] = ("log-linear", "logit-linear", "log-quadratic", "logit-quadratic")


@dataclass(frozen=True)
class PathFit:
    """A fitted rate curve r(α) along the path."""

    family: str
    coef: tuple[float, ...]
    alphas: tuple[float, ...]
    hits: tuple[float, ...]
    n: tuple[int, ...]

    @property
    def link(self) -> str:
        return self.family.split("-")[0]

    def eta(self, alpha: np.ndarray | float) -> np.ndarray:
        a = np.asarray(alpha, dtype=float)
        return sum(c * a**d for d, c in enumerate(self.coef))

    def log_rate(self, alpha: np.ndarray | float) -> np.ndarray:
        eta = self.eta(alpha)
        return log_expit(eta) if self.link == "logit" else np.minimum(eta, 0.0)

    def rate(self, alpha: np.ndarray | float) -> np.ndarray:
        return np.exp(self.log_rate(alpha))

    def residuals(self) -> list[float]:
        """Pearson residuals (k − n r) / sqrt(n r (1 − r)) at the fitted points."""
        r = self.rate(np.array(self.alphas))
        k, n = np.array(self.hits), np.array(self.n)
        return [float(x) for x in (k - n * r) / np.sqrt(np.maximum(n * r * (1 - r), 1e-300))]


def _nll(eta: np.ndarray, k: np.ndarray, n: np.ndarray, link: str) -> float:
    if link == "logit":
        return float(-(k * log_expit(eta) + (n - k) * log_expit(-eta)).sum())
    if (eta >= 0).any():
        return math.inf
    return float(-(k * eta + (n - k) * np.log(-np.expm1(eta))).sum())


def _derivatives(eta: np.ndarray, k: np.ndarray, n: np.ndarray, link: str) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives of the negative log-likelihood in η, per point."""
    if link == "logit":
        r = expit(eta)
        return n * r - k, np.maximum(n * r * (1 - r), 1e-300)
    odds = np.exp(eta) / -np.expm1(eta)  # r / (1 − r)
    return (n - k) * odds - k, np.maximum((n - k) * odds * (1 + odds), 1e-300)


def _newton(X: np.ndarray, k: np.ndarray, n: np.ndarray, link: str, coef: np.ndarray) -> np.ndarray:
    """Damped Newton on the binomial likelihood (a few small linear solves; the fit is convex in η)."""
    value = _nll(X @ coef, k, n, link)
    for _ in range(100):
        d1, d2 = _derivatives(X @ coef, k, n, link)
        grad, hess = X.T @ d1, X.T @ (d2[:, None] * X)
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(len(coef)), grad)
        except np.linalg.LinAlgError:
            step = grad
        t = 1.0
        while t > 1e-10:
            trial = coef - t * step
            new = _nll(X @ trial, k, n, link)
            if new <= value:
                break
            t /= 2
        else:
            break
        coef, done = trial, value - new < 1e-12 * max(1.0, abs(value))
        value = new
        if done and np.abs(grad).max() < 1e-6 * max(1.0, n.max()):
            break
    return coef


def fit_path(
    alphas: Sequence[float], hits: Sequence[int], n: Sequence[int], family: Family = "log-linear",
    start: np.ndarray | None = None,
) -> PathFit:
    """Maximum-likelihood fit of a rate curve to binomial counts (hits of n) at path points."""
    if family not in FAMILIES:
        raise ValueError(f"`family` (={family!r}) must be one of {FAMILIES}")
    link, shape = family.split("-")
    degree = 1 if shape == "linear" else 2
    a, k, m = (np.asarray(x, dtype=float) for x in (alphas, hits, n))
    if len(a) < degree + 1:
        raise ValueError(f"a {family} fit needs at least {degree + 1} points, got {len(a)}")
    X = np.vander(a, degree + 1, increasing=True)
    if start is None or not math.isfinite(_nll(X @ start, k, m, link)):
        p = (k + 0.5) / (m + 1.0)
        y = np.log(p / (1 - p)) if link == "logit" else np.log(p)
        start = np.linalg.lstsq(X * np.sqrt(m)[:, None], y * np.sqrt(m), rcond=None)[0]
        if link == "log":
            start[0] -= max(0.0, float((X @ start).max())) + 1e-3  # start inside η < 0
    coef = _newton(X, k, m, link, np.asarray(start, dtype=float))
    return PathFit(family, tuple(float(c) for c in coef), tuple(a.tolist()), tuple(float(x) for x in k),
                   tuple(int(x) for x in m))


def lpe(
    source: RolloutSource,
    prompt: Prompt,
    budget: int,
    *,
    family: Family = "log-quadratic",
    grid: Sequence[float] = DEFAULT_GRID,
    schedule: str = "frontier",
    min_fit_hits: int = 1,
    fit_points: int | None = 5,
    bootstrap: int = 400,
    confidence: float = 0.95,
    seed: int = 0,
    **walk: float,
) -> Estimate:
    """Logit Path Extrapolation of the target's rate from rollouts at α ∈ [0, 1).

    Args:
        family: the fitted trend (``log-quadratic`` by default; see the comparison in docs/estimators.md).
        min_fit_hits: fit only points with at least this many hits (0 fits every point).
        fit_points: fit only the last this many of those points (the ones nearest α = 1, where the
            trend that is extrapolated lives); None fits all of them.
        bootstrap: parametric bootstrap resamples for the interval.

    With fewer fit points than the family needs, the estimate is the monotone upper bound.
    """
    if budget < 1:
        raise ValueError(f"`budget` (={budget}) must be >= 1")
    points = walk_path(source, prompt, budget, grid=grid, schedule=schedule, **walk)
    walked = summarize(points)
    spent, hits, failed, path = walked.spent, walked.hits, walked.failed, walked.path
    settings = {"budget": budget, "family": family, "grid": list(grid), "schedule": schedule,
                "min_fit_hits": min_fit_hits, "fit_points": fit_points, "bootstrap": bootstrap, **walk}
    needed = 2 if family.endswith("linear") else 3
    used = [p for p in points if p.n and p.hits >= min_fit_hits]
    if fit_points is not None:
        used = used[-max(fit_points, needed):]
    bound = monotone_upper_bound(points, confidence)
    if len(used) < needed:
        return Estimate("lpe", prompt.id, 0.0, (0.0, bound), confidence, spent, hits, failed, True, settings,
                        {"points": path, "reason": f"{len(used)} points with hits; the fit needs {needed}",
                         "assumes": "monotone rate along the path"})
    a = [p.alpha for p in used]
    k = [p.hits for p in used]
    n = [p.n for p in used]
    fit = fit_path(a, k, n, family)
    # in logs throughout (a quadratic trend can fall below the smallest float); a rate along a
    # path that falls toward α = 1 is at most the monotone bound, so a trend turning up is cut there
    cap = math.log(bound) if bound > 0 else -math.inf
    log_rate = min(float(fit.log_rate(1.0)), cap)
    rate = math.exp(log_rate)
    rng = np.random.default_rng(seed)
    fitted = fit.rate(np.array(a))
    draws = []
    for _ in range(bootstrap):
        kb = rng.binomial(n, fitted)
        keep = kb >= max(min_fit_hits, 0)
        if keep.sum() < needed:
            continue
        fb = fit_path(np.array(a)[keep], kb[keep], np.array(n)[keep], family, start=np.array(fit.coef))
        draws.append(min(float(fb.log_rate(1.0)), cap))
    tail = (1 - confidence) / 2
    if len(draws) >= 20:
        lo, hi = np.quantile(draws, [tail, 1 - tail])
        interval = (float(math.exp(min(lo, log_rate))), float(math.exp(max(hi, log_rate))))
    else:
        interval = (0.0, bound)
    curve_alphas = np.linspace(min(a), 1, 21)  # the fitted range and its extrapolation, not before it
    diagnostics = {
        "points": path, "fit": {"family": family, "coef": list(fit.coef), "alphas": a, "hits": k, "n": n},
        "residuals": fit.residuals(), "curve": {"alpha": curve_alphas.tolist(), "rate": fit.rate(curve_alphas).tolist()},
        "bootstrap_used": len(draws), "monotone_bound": bound,
    }
    return Estimate("lpe", prompt.id, rate, interval, confidence, spent, hits, failed, False, settings, diagnostics)
