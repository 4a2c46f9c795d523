"""Independent token gradient importance sampling, ITGIS (METHODS.md §3).

The proposal keeps the positions independent: q_i(v) ∝ p_i(v) exp(s_i(v) / T), where s_i(v) is
an exponential moving average, over past batches, of the gradient of the target logit with
respect to the one-hot input at position i. Each batch's proposal is fixed before the batch is
drawn, so every batch's importance-weighted hit rate is unbiased and so is their mean.
"""

from __future__ import annotations

import math

import torch

from tailscope.estimators._weights import hit_interval
from tailscope.lowprob.distributions import InputDistribution, sample_positions
from tailscope.lowprob.lm import LowProbModel
from tailscope.lowprob.result import LowProbEstimate

__all__ = ["itgis", "proposal"]


def proposal(dist_probs: torch.Tensor, scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """q_i(v) ∝ p_i(v) exp(s_i(v)/T), rows normalised; zero where p is zero."""
    logits = dist_probs.log() + scores.to(torch.float64) / temperature
    return torch.softmax(logits, dim=1)


def itgis(lm: LowProbModel, dist: InputDistribution, target: int, budget: int, *, seed: int = 0,
          temperature: float = 0.5, decay: float = 0.9, batch_size: int | None = None) -> LowProbEstimate:
    """Estimate P(argmax = target) with ``budget`` calls (each sample costs a forward and a backward).

    Args:
        lm: the model.
        dist: the input distribution D.
        target: target token id.
        budget: model calls allowed; ``budget // 2`` samples are drawn.
        seed: seed of the sampling generator.
        temperature: T in q ∝ p exp(s/T), in units of the target logit.
        decay: EMA decay of the gradient average.
        batch_size: samples per proposal update; by default an eighth of the samples, within [16, 256],
            so that the proposal adapts about eight times at any budget.
    """
    if temperature <= 0:
        raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float")
    if not 0 <= decay < 1:
        raise ValueError(f"`decay` (={decay}) must lie in [0, 1)")
    n_total = budget // 2
    if n_total < 1:
        raise ValueError(f"`budget` (={budget}) is too small: ITGIS needs 2 calls per sample")
    if batch_size is None:
        batch_size = max(16, min(256, n_total // 8))
    probs = dist.with_vocab(lm.input_vocab_size).probs
    gen = torch.Generator().manual_seed(seed)
    ema = torch.zeros_like(probs)
    total, sq_total, hits, drawn, updates = 0.0, 0.0, 0, 0, 0
    while drawn < n_total:
        n = min(batch_size, n_total - drawn)
        # the EMA weights sum to 1 - decay^updates; dividing by it normalises them
        scores = ema / (1 - decay**updates) if updates else ema
        q = proposal(probs, scores, temperature)
        x = sample_positions(q, n, gen)
        log_w = dist.log_prob(x) - (q.gather(1, x.T).T.log().sum(1))  # log Π p_i(x_i)/q_i(x_i)
        out = lm.target_grad(x, target)
        hit = out.argmax == target
        w = torch.where(hit, log_w.exp(), torch.zeros_like(log_w))
        total += float(w.sum())
        sq_total += float((w**2).sum())
        hits += int(hit.sum())
        drawn += n
        ema = decay * ema + (1 - decay) * out.grad.mean(0).to(torch.float64)
        updates += 1
    mean = total / n_total
    var = max(sq_total / n_total - mean**2, 0.0)
    std_error = math.sqrt(var / max(n_total - 1, 1))
    log_est = math.log(mean) if mean > 0 else -math.inf
    # the weighted-rate interval of importance sampling, on the effective number of hits (Kish);
    # with no hits there is no weight to scale a bound by, so no interval is claimed
    interval = hit_interval(mean, std_error, min(hits, total**2 / sq_total), 0.95) if hits and sq_total > 0 else None
    return LowProbEstimate.from_log("itgis", target, log_est, calls=2 * n_total, budget=budget, seed=seed,
                                    diagnostics={"hits": hits, "samples": n_total, "std_error": std_error,
                                                 "temperature": temperature, "decay": decay}, interval=interval)
