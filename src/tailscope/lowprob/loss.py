"""Scoring against ground truth: the Itakura–Saito loss, raw and after an affine fit in log space
fitted on held-out targets (METHODS.md §3)."""

from __future__ import annotations

import numpy as np

__all__ = ["affine_fit_loss", "floor_estimates", "itakura_saito"]


def itakura_saito(p: np.ndarray, p_hat: np.ndarray) -> np.ndarray:
    """L(p, p̂) = p/p̂ − ln(p/p̂) − 1 elementwise; zero only when p̂ = p, infinite when p̂ = 0."""
    p, p_hat = np.asarray(p, dtype=float), np.asarray(p_hat, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(p_hat > 0, p / np.where(p_hat > 0, p_hat, 1.0), np.inf)
        return np.where(np.isinf(ratio), np.inf, ratio - np.log(ratio) - 1)


def floor_estimates(p_hat: np.ndarray, floor: float) -> np.ndarray:
    """Replace estimates below ``floor`` (including zeros) by ``floor``."""
    return np.maximum(np.asarray(p_hat, dtype=float), floor)


def affine_fit_loss(p: np.ndarray, p_hat: np.ndarray) -> np.ndarray:
    """Leave-one-out affine calibration: for each target j, fit ln p ≈ a ln p̂ + b by least squares
    on the other targets and score exp(a ln p̂_j + b) against p_j. Needs p̂ > 0 and ≥ 3 targets."""
    x, y = np.log(np.asarray(p_hat, dtype=float)), np.log(np.asarray(p, dtype=float))
    if len(x) < 3:
        raise ValueError(f"the leave-one-out affine fit needs at least 3 targets, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("the affine fit needs positive estimates; floor them first (see floor_estimates)")
    out = np.empty(len(x))
    for j in range(len(x)):
        rest = np.arange(len(x)) != j
        if np.ptp(x[rest]) > 0:
            a, b = np.polyfit(x[rest], y[rest], 1)
        else:
            a, b = 0.0, float(np.mean(y[rest]))
        out[j] = float(itakura_saito(np.exp(y[j]), np.exp(a * x[j] + b)))
    return out
