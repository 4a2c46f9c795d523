"""Naive Monte Carlo over the input distribution (METHODS.md §3, §2)."""

from __future__ import annotations

import math

import torch

from tailscope.estimators._interval import binomial_interval
from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.lm import LowProbModel
from tailscope.lowprob.result import LowProbEstimate

__all__ = ["naive", "naive_from_argmax"]


def naive_from_argmax(argmax: torch.Tensor, target: int, *, budget: int, seed: int) -> LowProbEstimate:
    """Score already-drawn samples: p̂ = k/n with the Clopper–Pearson interval (one-sided with 0 hits)."""
    n = len(argmax)
    hits = int((argmax == target).sum())
    interval = binomial_interval({"hits": hits, "n": n}, 0.95)
    log_est = math.log(hits / n) if hits else -math.inf
    return LowProbEstimate("naive", target, hits / n, log_est, calls=n, budget=budget, seed=seed,
                           diagnostics={"hits": hits, "samples": n, "interval": [interval.low, interval.high]},
                           interval=interval)


def naive(lm: LowProbModel, dist: InputDistribution, target: int, budget: int, *, seed: int = 0) -> LowProbEstimate:
    """Draw ``budget`` inputs from ``dist`` and count how often the model's argmax is ``target``."""
    gen = torch.Generator().manual_seed(seed)
    x = dist.sample(budget, gen)
    return naive_from_argmax(lm.argmax(x), target, budget=budget, seed=seed)
