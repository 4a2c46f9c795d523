"""Logit Path Extrapolation (LPE, METHODS.md §2).

Measure the behaviour's rate r_j at path points α_j ∈ [0, 1) where it is common, fit a smooth
trend by binomial likelihood — logit r(α) or log r(α) a low-degree polynomial in α (the default:
log-quadratic), or log r(α) = c0 + c1 φ(α) + m(α) with a path shape (m, φ) shared across prompts
and learned from calibration prompts' path points (``log-shape``) — on the points where hits are
seen, and evaluate it at α = 1. The interval is a parametric bootstrap of the fit, which covers the sampling noise of
the points, widened by the error of the trend itself: for ``log-shape`` the shape's own measured
error, for the polynomial families ``TREND_ERROR`` decades per unit of α extrapolated, measured on
the calibration suite's tuning prompts (``benchmarks/tune_intervals.py``; docs/methods.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.special import expit, log_expit
from scipy.stats import chi2, norm

from ..prompts import Prompt
from ._estimate import Estimate
from ._flags import budget_flags, lpe_flags
from ._interval import Interval
from ._registry import register_estimator
from ._source import RolloutSource
from .mis import monotone_bound_interval, monotone_upper_bound
from .schedule import DEFAULT_GRID, summarize, walk_path

__all__ = ["FAMILIES", "TREND_ERROR", "PathFit", "PathShape", "fit_path", "learn_shape", "lpe", "trend_sd",
           "widen_by_trend"]

Family = Literal["log-linear", "logit-linear", "log-quadratic", "logit-quadratic", "log-shape"]
FAMILIES: tuple[str, ...] = ("log-linear", "logit-linear", "log-quadratic", "logit-quadratic", "log-shape")
# the polynomial trends' own error at α = 1, in decades per unit of α between the last fitted point
# and α = 1 (a standard deviation, added in quadrature to the bootstrap's spread); measured on
# prompts never scored: benchmarks/results/interval_tuning.json
TREND_ERROR = 4.25


@dataclass(frozen=True)
class PathShape:
    """A shape of log r(α) shared across prompts: log r(α) = c0 + c1 φ(α) + m(α), per prompt (c0, c1).

    ``mean`` (m) and ``pc`` (φ) are given at ``alphas`` (which end at α = 1) and interpolated
    linearly between them. ``sd_per_alpha`` and ``sd_floor`` set the error of the shape itself, in
    decades, added to the bootstrap interval: max(sd_floor, sd_per_alpha (0.9 − α_last)) for a fit
    whose last point is α_last.
    """

    alphas: tuple[float, ...]
    mean: tuple[float, ...]
    pc: tuple[float, ...]
    sd_per_alpha: float = 1.0
    sd_floor: float = 0.05

    def offset(self, alpha: np.ndarray | float) -> np.ndarray:
        return np.interp(alpha, self.alphas, self.mean)

    def basis(self, alpha: np.ndarray | float) -> np.ndarray:
        return np.interp(alpha, self.alphas, self.pc)

    def extrapolation_sd(self, alpha_last: float) -> float:
        """The shape's own error of log r(1) (natural log) for a fit whose last point is ``alpha_last``."""
        return math.log(10) * max(self.sd_floor, self.sd_per_alpha * (0.9 - alpha_last))


def learn_shape(alphas: Sequence[float], log_rates: np.ndarray, **errors: float) -> PathShape:
    """Learn a :class:`PathShape` from calibration prompts' path log-rates (prompts × ``alphas``, α < 1).

    Only path points are used — what a user can measure on calibration prompts with a generous
    budget, not the target's rate. m is the mean of the per-prompt-centred curves and φ their first
    principal component; both are continued to α = 1 by repeating their last increment scaled by
    the ratio of successive increments, whose excess over 1 is assumed to shrink geometrically.
    """
    a = np.asarray(alphas, dtype=float)
    L = np.asarray(log_rates, dtype=float)
    if L.ndim != 2 or L.shape[1] != len(a) or len(a) < 4 or L.shape[0] < 3 or a[-1] >= 1:
        raise ValueError("`log_rates` must be prompts × alphas (at least 3 × 4), alphas in [0, 1)")
    centred = L - L.mean(1, keepdims=True)
    mean = centred.mean(0)
    pc = np.linalg.svd(centred - mean, full_matrices=False)[2][0]
    pc = pc * (1.0 if pc[-1] >= pc[0] else -1.0)
    d = np.diff(L, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.nanmedian(d[:, 1:] / d[:, :-1], axis=0)
    last, before = ratio[-1] - 1, ratio[-2] - 1
    decay = min(max(last / before, 0.0), 1.0) if before else 1.0
    step = (1 - a[-1]) / (a[-1] - a[-2])
    grow = (1 + last * decay) * step

    def extend(y: np.ndarray) -> tuple[float, ...]:
        return tuple(float(v) for v in np.r_[y, y[-1] + grow * (y[-1] - y[-2])])

    return PathShape(tuple(float(x) for x in a) + (1.0,), extend(mean), extend(pc), **errors)


@dataclass(frozen=True)
class PathFit:
    """A fitted rate curve r(α) along the path."""

    family: str
    coef: tuple[float, ...]
    alphas: tuple[float, ...]
    hits: tuple[float, ...]
    n: tuple[int, ...]
    shape: PathShape | None = None

    @property
    def link(self) -> str:
        return self.family.split("-")[0]

    def eta(self, alpha: np.ndarray | float) -> np.ndarray:
        a = np.asarray(alpha, dtype=float)
        if self.shape is not None:
            return self.coef[0] + self.coef[1] * self.shape.basis(a) + self.shape.offset(a)
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


def _newton(X: np.ndarray, k: np.ndarray, n: np.ndarray, link: str, coef: np.ndarray,
            offset: np.ndarray | float = 0.0) -> np.ndarray:
    """Damped Newton on the binomial likelihood (a few small linear solves; the fit is convex in η)."""
    value = _nll(X @ coef + offset, k, n, link)
    for _ in range(100):
        d1, d2 = _derivatives(X @ coef + offset, k, n, link)
        grad, hess = X.T @ d1, X.T @ (d2[:, None] * X)
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(len(coef)), grad)
        except np.linalg.LinAlgError:
            step = grad
        t = 1.0
        while t > 1e-10:
            trial = coef - t * step
            new = _nll(X @ trial + offset, k, n, link)
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
    start: np.ndarray | None = None, shape: PathShape | None = None,
) -> PathFit:
    """Maximum-likelihood fit of a rate curve to binomial counts (hits of n) at path points.

    ``log-shape`` fits log r(α) = c0 + c1 φ(α) + m(α) for the :class:`PathShape` ``shape``.
    """
    if family not in FAMILIES:
        raise ValueError(f"`family` (={family!r}) must be one of {FAMILIES}")
    link, form = family.split("-")
    a, k, m = (np.asarray(x, dtype=float) for x in (alphas, hits, n))
    if form == "shape":
        if shape is None:
            raise ValueError("a log-shape fit needs `shape` (a PathShape, e.g. from learn_shape)")
        X, offset = np.column_stack([np.ones_like(a), shape.basis(a)]), shape.offset(a)
    else:
        shape, degree = None, 1 if form == "linear" else 2
        X, offset = np.vander(a, degree + 1, increasing=True), np.zeros_like(a)
    if len(a) < X.shape[1]:
        raise ValueError(f"a {family} fit needs at least {X.shape[1]} points, got {len(a)}")
    if start is None or not math.isfinite(_nll(X @ start + offset, k, m, link)):
        p = (k + 0.5) / (m + 1.0)
        y = (np.log(p / (1 - p)) if link == "logit" else np.log(p)) - offset
        start = np.linalg.lstsq(X * np.sqrt(m)[:, None], y * np.sqrt(m), rcond=None)[0]
        if link == "log":
            start[0] -= max(0.0, float((X @ start + offset).max())) + 1e-3  # start inside η < 0
    coef = _newton(X, k, m, link, np.asarray(start, dtype=float), offset)
    return PathFit(family, tuple(float(c) for c in coef), tuple(a.tolist()), tuple(float(x) for x in k),
                   tuple(int(x) for x in m), shape)


def trend_sd(trend_error: float, alpha_last: float) -> float:
    """A polynomial trend's own error at α = 1 (natural log): ``trend_error`` decades per unit of α
    between the last fitted point and α = 1."""
    return math.log(10) * trend_error * (1 - alpha_last)


def widen_by_trend(spread: Sequence[float], log_rate: float, sd: float, cap: float,
                   confidence: float = 0.95) -> tuple[float, float]:
    """The bootstrap interval ``spread`` widened by the trend's error ``sd`` (natural log), in
    quadrature on the log scale around ``log_rate``; the upper end no higher than ``cap`` (the log
    of the monotone bound) unless the estimate itself is."""
    lo, hi = (math.log(x) if x > 0 else -math.inf for x in spread)
    if sd > 0:
        z = float(norm.ppf(1 - (1 - confidence) / 2))
        lo = log_rate - math.hypot(max(log_rate - lo, 0.0), z * sd)
        hi = min(log_rate + math.hypot(max(hi - log_rate, 0.0), z * sd), max(cap, log_rate))
    return float(math.exp(min(lo, log_rate))), float(math.exp(max(hi, log_rate)))


@register_estimator("lpe")
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
    shape: PathShape | None = None,
    shape_check: float | None = 0.01,
    bootstrap: int = 400,
    trend_error: float | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    **walk: float,
) -> Estimate:
    """Logit Path Extrapolation of the target's rate from rollouts at α ∈ [0, 1).

    Args:
        family: the fitted trend (``log-quadratic`` by default; ``log-shape`` fits a shape shared
            across prompts, ``shape``; see the comparison in docs/estimators.md).
        min_fit_hits: fit only points with at least this many hits (0 fits every point).
        fit_points: fit only the last this many of those points (the ones nearest α = 1, where the
            trend that is extrapolated lives); None fits all of them.
        bootstrap: parametric bootstrap resamples for the interval (``log-shape`` widens it by the
            shape's own error, :meth:`PathShape.extrapolation_sd`).
        shape: the :class:`PathShape` of ``log-shape``, learned on calibration prompts of the same
            pair (:func:`learn_shape`); required for that family.
        shape_check: level of the likelihood-ratio test of the shape against a log-quadratic on the
            same points; where it rejects, the log-quadratic on the last 5 points is used (None: never).
        trend_error: the polynomial trend's own error (decades per unit of α extrapolated; default
            ``TREND_ERROR``), added to the bootstrap interval; 0 gives the bootstrap alone.

    With fewer fit points than the family needs, the estimate is the monotone upper bound.
    """
    if budget < 1:
        raise ValueError(f"`budget` (={budget}) must be >= 1")
    trend_error = TREND_ERROR if trend_error is None else float(trend_error)
    if not trend_error >= 0:
        raise ValueError(f"`trend_error` (={trend_error}) must be >= 0")
    if family == "log-shape" and shape is None:
        raise ValueError("family='log-shape' needs `shape`: learn one with learn_shape() on calibration prompts")
    points = walk_path(source, prompt, budget, grid=grid, schedule=schedule, **walk)
    walked = summarize(points)
    spent, hits, failed, path = walked.spent, walked.hits, walked.failed, walked.path
    settings = {"budget": budget, "family": family, "grid": list(grid), "schedule": schedule,
                "min_fit_hits": min_fit_hits, "fit_points": fit_points, "shape_check": shape_check,
                "bootstrap": bootstrap, "trend_error": trend_error, **walk}
    needed = 2 if family.endswith(("linear", "shape")) else 3
    used = [p for p in points if p.n and p.hits >= min_fit_hits]
    if fit_points is not None:
        used = used[-max(fit_points, needed):]
    bound = monotone_upper_bound(points, confidence)
    bound_interval = monotone_bound_interval({"points": [(p.hits, p.n) for p in points]}, confidence)
    if len(used) < needed:
        return Estimate(method="lpe", prompt_id=prompt.id, rate=0.0, interval=bound_interval, rollouts=spent,
                        hits=hits, failed=failed, upper_bound_only=True, settings=settings,
                        diagnostics={"points": path, "reason": f"{len(used)} points with hits; the fit needs {needed}",
                                     "assumes": "monotone rate along the path"},
                        flags=("few_hits" if hits else "no_hits", *budget_flags(budget)))
    a = [p.alpha for p in used]
    k = [p.hits for p in used]
    n = [p.n for p in used]
    fit = fit_path(a, k, n, family, shape=shape)
    shape_test = None
    if family == "log-shape" and shape_check and len(used) >= 3:
        # the shared shape must describe this prompt's points: a likelihood-ratio test against a
        # log-quadratic on the same points (one parameter more); if it fails, fit that family instead
        ka, na, quad = np.array(k, float), np.array(n, float), fit_path(a, k, n, "log-quadratic")
        stat = 2 * (_nll(fit.eta(np.array(a)), ka, na, "log") - _nll(quad.eta(np.array(a)), ka, na, "log"))
        shape_test = {"statistic": float(stat), "rejected": bool(stat > chi2.ppf(1 - shape_check, 1))}
        if shape_test["rejected"]:
            family, needed, used = "log-quadratic", 3, used[-5:]
            a, k, n = [p.alpha for p in used], [p.hits for p in used], [p.n for p in used]
            fit = fit_path(a, k, n, family)
    # in logs throughout (a quadratic trend can fall below the smallest float); a rate along a
    # path that falls toward α = 1 is at most the monotone bound, so a trend turning up is cut there
    cap = math.log(bound) if bound > 0 else -math.inf
    capped = float(fit.log_rate(1.0)) > cap
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
        fb = fit_path(np.array(a)[keep], kb[keep], np.array(n)[keep], family, start=np.array(fit.coef), shape=shape)
        draws.append(min(float(fb.log_rate(1.0)), cap))
    tail = (1 - confidence) / 2
    spread: list[float] | None = None  # the bootstrap's interval alone, before the trend's error
    sd: float | None = None  # the trend's own error (natural log); None where no bootstrap interval is built
    if len(draws) >= 20:
        lo, hi = np.quantile(draws, [tail, 1 - tail])
        spread = [float(math.exp(min(lo, log_rate))), float(math.exp(max(hi, log_rate)))]
        sd = (fit.shape.extrapolation_sd(a[-1]) if fit.shape is not None
              else trend_sd(trend_error, a[-1]))
        low, high = widen_by_trend(spread, log_rate, sd, cap, confidence)
        interval = Interval(low, high, confidence, "parametric bootstrap")
    else:
        interval = bound_interval
    curve_alphas = np.linspace(min(a), 1, 21)  # the fitted range and its extrapolation, not before it
    diagnostics = {
        "points": path, "fit": {"family": family, "coef": list(fit.coef), "alphas": a, "hits": k, "n": n,
                                   "shape": asdict(fit.shape) if fit.shape is not None else None},
        "residuals": fit.residuals(), "curve": {"alpha": curve_alphas.tolist(), "rate": fit.rate(curve_alphas).tolist()},
        "bootstrap_used": len(draws), "bootstrap_interval": spread,
        "trend_sd_decades": None if sd is None else sd / math.log(10),
        "monotone_bound": bound, "shape_test": shape_test, "capped": capped,
        **_residual_test(fit.residuals(), len(fit.coef)),
    }
    return Estimate(method="lpe", prompt_id=prompt.id, rate=rate, interval=interval, rollouts=spent, hits=hits,
                    failed=failed, settings=settings, diagnostics=diagnostics,
                    flags=lpe_flags(diagnostics) + budget_flags(budget))


def _residual_test(residuals: Sequence[float], params: int) -> dict[str, float | None]:
    """Pearson's χ² of the fit at its points and its p-value (None with no degrees of freedom left)."""
    stat, dof = float(np.sum(np.square(residuals))), len(residuals) - params
    return {"residual_chi2": stat, "residual_p": float(chi2.sf(stat, dof)) if dof > 0 else None}
