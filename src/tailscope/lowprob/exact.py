"""Exact answers by enumeration for distributions with a small support: the reference that the
estimators are tested against (METHODS.md §3)."""

from __future__ import annotations

import itertools
import math

import torch

from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.lm import LowProbModel

__all__ = ["enumerate_support", "exact_argmax_probabilities", "exact_tilted_distribution"]


def enumerate_support(dist: InputDistribution, max_inputs: int = 2**20) -> tuple[torch.Tensor, torch.Tensor]:
    """Every input with nonzero probability and its log p(x): ((N, k) long, (N,) float64)."""
    supports = [row.nonzero().flatten().tolist() for row in dist.probs]
    size = math.prod(len(s) for s in supports)
    if size > max_inputs:
        raise ValueError(f"distribution {dist.name!r} has {size} inputs, more than `max_inputs` (={max_inputs})")
    x = torch.tensor(list(itertools.product(*supports)), dtype=torch.long)
    return x, dist.log_prob(x)


def exact_argmax_probabilities(lm: LowProbModel, dist: InputDistribution, max_inputs: int = 2**20) -> torch.Tensor:
    """P_{x∼D}[argmax M(x) = t] for every token t, (V,) float64."""
    x, log_p = enumerate_support(dist, max_inputs)
    argmax = lm.argmax(x)
    return torch.zeros(lm.vocab_size, dtype=torch.float64).index_add_(0, argmax, log_p.exp())


def exact_tilted_distribution(lm: LowProbModel, dist: InputDistribution, target: int, temperature: float,
                              max_inputs: int = 2**20) -> tuple[torch.Tensor, torch.Tensor]:
    """The MHIS target q(x) = p(x) exp(M_t(x)/T) / Z over the support: (inputs (N, k), q (N,))."""
    x, log_p = enumerate_support(dist, max_inputs)
    logits = lm.logits(x).to(torch.float64)
    log_q = log_p + logits[:, target] / temperature
    return x, torch.softmax(log_q, 0)
