"""Activation extrapolation: quadratic logit decomposition (QLD) and Gaussian logit difference
(GLD), METHODS.md §3.

Both draw n inputs from D, read the final activation that the unembedding multiplies, and
extrapolate from it instead of waiting for hits: n calls, no gradients. The ``*_from_*`` functions
take activations directly, so that one sample can serve many targets and so that the estimators
can be checked on Gaussian activations, where they are exact.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.lm import LowProbModel
from tailscope.lowprob.result import LowProbEstimate

__all__ = ["gld", "gld_from_logits", "qld", "qld_from_activations", "shortest_direction", "whiten"]


def whiten(acts: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z = (act − mean) A^{−T}, with A A^T the sample covariance plus εI. Returns (z, mean, A).

    The mean is subtracted in activation space, before the whitening map; subtracting it
    afterwards (act A^{−T} − mean) mixes the two spaces.
    """
    acts = acts.to(torch.float64)
    mean = acts.mean(0)
    centred = acts - mean
    cov = centred.T @ centred / max(len(acts) - 1, 1) + eps * torch.eye(acts.shape[1], dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)  # lower triangular A, cov = A Aᵀ
    z = torch.linalg.solve_triangular(chol, centred.T, upper=False).T
    return z, mean, chol


def shortest_direction(slopes: torch.Tensor, offsets: torch.Tensor, target: int, *, max_iter: int = 20000,
                       tol: float = 1e-9) -> torch.Tensor | None:
    """A short z with argmax_j (slopes_j · z + offsets_j) = target, by iterative projection.

    Starting from z = 0, project onto the most violated half-space {(s_t − s_j)·z + o_t − o_j ≥ 0}
    until none is violated. Returns None if no such z was found (the target cannot win).
    """
    gaps_w = slopes[target] - slopes  # (V, d)
    gaps_b = offsets[target] - offsets
    keep = torch.arange(len(slopes)) != target
    gaps_w, gaps_b = gaps_w[keep], gaps_b[keep]
    norms = gaps_w.norm(dim=1).clamp_min(1e-30)
    z = torch.zeros(slopes.shape[1], dtype=torch.float64)
    for _ in range(max_iter):
        margin = (gaps_w @ z + gaps_b) / norms
        worst = int(margin.argmin())
        if margin[worst] >= 0:
            return z
        # step just past the boundary so that the point ends strictly inside
        z = z + (-margin[worst] + tol) * gaps_w[worst] / norms[worst]
    return None


def qld_from_activations(acts: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, target: int, *,
                         eps: float = 1e-6, chunk: int = 2048) -> tuple[float, dict]:
    """The QLD estimate (1/n²) #{(i, j): argmax(a_i d + b_j) = t} from activations (n, d).

    Args:
        acts: final activations, one row per input.
        weight: unembedding (V, d); bias: (V,). Logits are acts @ weightᵀ + bias.
        target: target token id.
        eps: ridge added to the covariance before the Cholesky factorisation.
        chunk: rows of b processed at once.

    Returns:
        (p̂, diagnostics).
    """
    z, mean, chol = whiten(acts, eps)
    n = len(z)
    slopes = weight.to(torch.float64) @ chol  # logits(z) = slopes z + offsets
    offsets = weight.to(torch.float64) @ mean + bias.to(torch.float64)
    d = shortest_direction(slopes, offsets, target)
    if d is None:
        return 0.0, {"direction_norm": math.inf, "samples": n}
    d_hat = d / d.norm() if d.norm() > 0 else torch.nn.functional.normalize(slopes[target] - slopes.mean(0), dim=0)
    a = z @ d_hat
    b = z - a[:, None] * d_hat  # the components orthogonal to d
    a_sorted = a.sort().values
    alpha = slopes @ d_hat  # logit slope along d, (V,)
    d_alpha = alpha[target] - alpha  # need d_alpha a + d_beta ≥ 0 for all j ≠ t
    up, down, flat = d_alpha > 0, d_alpha < 0, d_alpha == 0
    up[target] = down[target] = flat[target] = False
    count = 0
    for bj in b.split(chunk):
        beta = bj @ slopes.T + offsets  # (m, V)
        d_beta = beta[:, target:target + 1] - beta
        bound = -d_beta / torch.where(d_alpha == 0, torch.ones_like(d_alpha), d_alpha)
        lo = bound[:, up].max(1).values if up.any() else torch.full((len(bj),), -math.inf, dtype=torch.float64)
        hi = bound[:, down].min(1).values if down.any() else torch.full((len(bj),), math.inf, dtype=torch.float64)
        feasible = (d_beta[:, flat] >= 0).all(1) & (lo <= hi)
        inside = torch.searchsorted(a_sorted, hi, right=True) - torch.searchsorted(a_sorted, lo, right=False)
        count += int(torch.where(feasible, inside, torch.zeros_like(inside)).sum())
    return count / n**2, {"pairs": count, "samples": n, "direction_norm": float(d.norm())}


def gld_from_logits(logits: torch.Tensor, target: int) -> tuple[float, dict]:
    """ln P(N(μ, σ²) > 0) for the gap logit_t − max_{j≠t} logit_j over the samples; returns (ln p̂, diag)."""
    logits = logits.to(torch.float64)
    others = logits.clone()
    others[:, target] = -math.inf
    gap = logits[:, target] - others.max(1).values
    mu, sigma = float(gap.mean()), float(gap.std())
    log_p = float(stats.norm.logsf(0.0, loc=mu, scale=sigma)) if sigma > 0 else (0.0 if mu > 0 else -math.inf)
    return log_p, {"gap_mean": mu, "gap_std": sigma, "samples": len(gap)}


def _draw(lm: LowProbModel, dist: InputDistribution, budget: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return lm.activations(dist.sample(budget, gen))


def qld(lm: LowProbModel, dist: InputDistribution, target: int, budget: int, *, seed: int = 0,
        eps: float = 1e-6) -> LowProbEstimate:
    """QLD with ``budget`` forward calls (one activation per call)."""
    acts, _ = _draw(lm, dist, budget, seed)
    weight, bias = lm.unembedding
    p, diag = qld_from_activations(acts, weight, bias, target, eps=eps)
    return LowProbEstimate.from_log("qld", target, math.log(p) if p > 0 else -math.inf, calls=budget,
                                    budget=budget, seed=seed, diagnostics=diag)


def gld(lm: LowProbModel, dist: InputDistribution, target: int, budget: int, *, seed: int = 0) -> LowProbEstimate:
    """GLD with ``budget`` forward calls."""
    _, logits = _draw(lm, dist, budget, seed)
    log_p, diag = gld_from_logits(logits, target)
    return LowProbEstimate.from_log("gld", target, log_p, calls=budget, budget=budget, seed=seed, diagnostics=diag)
