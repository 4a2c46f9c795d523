"""The Pareto-k̂ tail diagnostic of importance weights (Vehtari, Simpson, Gelman, Yao, Gabry:
"Pareto smoothed importance sampling", JMLR 2024; arXiv 1507.02646).

The largest M = ⌈min(S/5, 3√S)⌉ of S weights are fitted with a generalized Pareto distribution
above the (M+1)-th largest; its shape k̂ estimates the tail index of the weights' distribution.
The weights have a finite variance only for k < 1/2, and the paper's experiments show that for
k̂ > 0.7 the standard error (and so any interval built from it) cannot be trusted at any
practical sample size. The fit is Zhang & Stephens' (2009) empirical-Bayes estimate with the
paper's weakly informative prior pulling k̂ toward 0.5 for small tails.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

__all__ = ["KHAT_LIMIT", "gpd_fit", "pareto_khat", "tail_length"]

KHAT_LIMIT = 0.7  # above it the variance estimate is not to be trusted (Vehtari et al. 2024, §3)


def tail_length(n: int) -> int:
    """M = ⌈min(n/5, 3√n)⌉, the number of largest weights the tail fit uses."""
    return int(math.ceil(min(0.2 * n, 3 * math.sqrt(n))))


def gpd_fit(exceedances: np.ndarray, *, prior_weight: float = 10.0) -> tuple[float, float]:
    """(k̂, σ̂) of a generalized Pareto fitted to positive exceedances over a threshold.

    Zhang & Stephens (2009): a grid of m = 30 + ⌊√n⌋ values of θ = −k/σ placed by the data's
    first quartile and maximum, each weighted by its profile likelihood; θ̂ is the weighted mean
    and k̂ = mean(log(1 − θ̂ x)). The weakly informative prior of Vehtari et al. shrinks k̂ toward
    0.5 with the weight of ``prior_weight`` observations: k̂ ← (n k̂ + 5) / (n + 10).
    """
    x = np.sort(np.asarray(exceedances, dtype=float))
    n = x.size
    if n < 2 or x[-1] <= 0:
        raise ValueError(f"a generalized Pareto fit needs at least 2 positive exceedances, got {n}")
    quartile = x[int(math.floor(n / 4 + 0.5)) - 1]
    quartile = quartile if quartile > 0 else x[x > 0][0]  # ties at the threshold
    m = 30 + int(math.floor(math.sqrt(n)))
    j = np.arange(1, m + 1)
    theta = 1 / x[-1] + (1 - np.sqrt(m / (j - 0.5))) / (3 * quartile)
    k = np.log1p(-theta[:, None] * x[None, :]).mean(1)  # the MLE of k given each θ
    profile = n * (np.log(-theta / k) - k - 1)
    weight = np.exp(profile - logsumexp(profile))
    theta_hat = float((theta * weight).sum())
    k_hat = float(np.log1p(-theta_hat * x).mean())
    sigma = -k_hat / theta_hat
    return (n * k_hat + 0.5 * prior_weight) / (n + prior_weight), sigma


def pareto_khat(weights: np.ndarray, *, log: bool = False) -> float:
    """k̂ of the upper tail of ``weights`` (or of exp(``weights``) with ``log=True``).

    Returns ``inf`` when there are too few weights for a tail of 5 (nothing can be said) and
    ``-inf`` when the tail is flat (its largest weights are all equal: no tail at all, as when
    every hit of a switching proposal shares one opening).
    """
    values = np.asarray(weights, dtype=float).ravel()
    if log:
        values = np.exp(values - values.max()) if values.size else values
    values = values[np.isfinite(values)]
    m = tail_length(values.size)
    if m < 5 or values.size <= m:
        return math.inf
    top = np.sort(values)[-(m + 1):]
    exceed = top[1:] - top[0]
    if exceed[-1] <= 0 or (exceed > 0).sum() < 2:
        return -math.inf
    return gpd_fit(exceed)[0]
