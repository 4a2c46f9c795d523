"""Naive Monte Carlo over the input distribution (METHODS.md §3, §2)."""

from __future__ import annotations

import math

import torch
from scipy import stats

from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.lm import LowProbModel
from tailscope.lowprob.result import LowProbEstimate

__all__ = ["clopper_pearson", "naive", "naive_from_argmax"]


def clopper_pearson(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval; with zero hits the lower end is 0 and the upper one-sided."""
    alpha = 1 - confidence
    if hits == 0:
        return 0.0, float(1 - alpha ** (1 / n))
    low = float(stats.beta.ppf(alpha / 2, hits, n - hits + 1))
    high = 1.0 if hits == n else float(stats.beta.ppf(1 - alpha / 2, hits + 1, n - hits))
    return low, high


def naive_from_argmax(argmax: torch.Tensor, target: int, *, budget: int, seed: int) -> LowProbEstimate:
    """Score already-drawn samples: p̂ = k/n with the Clopper–Pearson interval."""
    n = len(argmax)
    hits = int((argmax == target).sum())
    low, high = clopper_pearson(hits, n)
    log_est = math.log(hits / n) if hits else -math.inf
    return LowProbEstimate("naive", target, hits / n, log_est, calls=n, budget=budget, seed=seed,
                           diagnostics={"hits": hits, "samples": n, "interval": [low, high]})


def naive(lm: LowProbModel, dist: InputDistribution, target: int, budget: int, *, seed: int = 0) -> LowProbEstimate:
    """Draw ``budget`` inputs from ``dist`` and count how often the model's argmax is ``target``."""
    gen = torch.Generator().manual_seed(seed)
    x = dist.sample(budget, gen)
    return naive_from_argmax(lm.argmax(x), target, budget=budget, seed=seed)
