"""Path multiple importance sampling with the balance heuristic (METHODS.md §2).

Samples from several path points α_1..α_J (n_j each) are pooled:

    μ̂ = (1/N) Σ_j Σ_i f(y_ij) q_1(y_ij) / Σ_k (n_k/N) q_{α_k}(y_ij)

which needs log q_{α_k}(y) of every sample at every point — recorded during sampling. It is
unbiased for a fixed allocation (``schedule="fixed"``); the adaptive walk chooses later n_k from
earlier hits, which leaves a small bias that the tests and the evaluation measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import logsumexp

from ..prompts import Prompt
from ._estimate import Estimate, clopper_pearson, zero_hit_upper_bound
from ._source import RolloutSource
from ._weights import hit_interval
from .schedule import DEFAULT_GRID, PathPoint, summarize, walk_path

__all__ = ["balance_heuristic", "mis", "monotone_upper_bound"]


def monotone_upper_bound(points: Sequence[PathPoint], confidence: float) -> float:
    """The smallest one-sided upper bound on a point's rate: a bound on the target's rate if the
    rate falls monotonically from the reference to the target along the path (LPE's premise)."""
    bounds = []
    for p in points:
        if p.n:
            bounds.append(zero_hit_upper_bound(p.n, confidence) if p.hits == 0
                          else clopper_pearson(p.hits, p.n, 2 * confidence - 1)[1])
    return min(bounds, default=1.0)


def balance_heuristic(points: Sequence[PathPoint]) -> tuple[float, float, np.ndarray]:
    """(μ̂, standard error, per-sample contributions) of the balance-heuristic estimator."""
    alphas = [p.alpha for p in points]
    counts = np.array([p.n for p in points], dtype=float)
    total = counts.sum()
    log_share = np.log(np.where(counts > 0, counts / total, 1.0))
    mean_terms, var_terms, contributions = 0.0, 0.0, []
    for p in points:
        g = []
        for o in p.observations:
            if o.flagged is None:
                continue
            if not o.flagged:
                g.append(0.0)
                continue
            r = o.rollout
            logs = np.array([r.grid_logprob(a) for a in alphas])
            log_mix = logsumexp(np.where(counts > 0, log_share + logs, -np.inf))
            g.append(math.exp(r.logprob_target - log_mix))
        g_arr = np.array(g)
        contributions.append(g_arr)
        if g_arr.size:
            mean_terms += g_arr.sum()
            if g_arr.size > 1:
                var_terms += g_arr.size * g_arr.var(ddof=1)
    mean = mean_terms / total if total else 0.0
    se = math.sqrt(var_terms) / total if total else 0.0
    return float(mean), float(se), np.concatenate(contributions) if contributions else np.zeros(0)


def mis(
    source: RolloutSource,
    prompt: Prompt,
    budget: int,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    schedule: str = "adaptive",
    confidence: float = 0.95,
    **walk: float,
) -> Estimate:
    """Balance-heuristic estimate of the target's rate from rollouts spread along the path.

    With no hits anywhere the estimate is the monotone upper bound (see :func:`monotone_upper_bound`).
    """
    if budget < 1:
        raise ValueError(f"`budget` (={budget}) must be >= 1")
    points = walk_path(source, prompt, budget, grid=grid, schedule=schedule, **walk)
    walked = summarize(points)
    spent, hits, failed, path = walked.spent, walked.hits, walked.failed, walked.path
    settings = {"budget": budget, "grid": list(grid), "schedule": schedule, **walk}
    bound = monotone_upper_bound(points, confidence)
    if hits == 0:
        return Estimate("mis", prompt.id, 0.0, (0.0, bound), confidence, spent, 0, failed, True, settings,
                        {"points": path, "assumes": "monotone rate along the path"})
    mean, se, g = balance_heuristic(points)
    share = float(g.max() / g.sum()) if g.sum() > 0 else 0.0
    ess_hits = float(g.sum() ** 2 / (g**2).sum()) if g.sum() > 0 else 0.0
    diagnostics = {"points": path, "standard_error": se, "max_weight_share": share, "ess_hits": ess_hits}
    interval = hit_interval(mean, se, min(hits, ess_hits), confidence)
    return Estimate("mis", prompt.id, mean, interval, confidence, spent, hits, failed, False, settings, diagnostics)
