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
from ._estimate import Estimate
from ._flags import budget_flags, weight_flags
from ._pareto import pareto_khat
from ._interval import Interval, clopper_pearson, interval_rule, zero_hit_upper_bound
from ._registry import register_estimator
from ._source import RolloutSource
from ._weights import hit_interval, weight_diagnostics
from .schedule import DEFAULT_GRID, PathPoint, summarize, walk_path

__all__ = ["TAIL_WIDENING", "balance_heuristic", "bridge_decades", "mis", "mixture_log_weights",
           "monotone_bound_interval", "monotone_upper_bound"]


def _monotone_bound(counts: Sequence[Sequence[int]], confidence: float) -> float:
    bounds = []
    for hits, n in counts:
        if n:
            bounds.append(zero_hit_upper_bound(n, confidence) if hits == 0
                          else clopper_pearson(hits, n, 2 * confidence - 1)[1])
    return min(bounds, default=1.0)


def monotone_upper_bound(points: Sequence[PathPoint], confidence: float) -> float:
    """The smallest one-sided upper bound on a point's rate: a bound on the target's rate if the
    rate falls monotonically from the reference to the target along the path (LPE's premise)."""
    return _monotone_bound([(p.hits, p.n) for p in points], confidence)


@interval_rule("monotone bound")
def monotone_bound_interval(basis, confidence: float) -> Interval:
    """[0, the monotone upper bound] from the (hits, n) of every path point."""
    counts = [(int(k), int(n)) for k, n in basis["points"]]
    return Interval(0.0, _monotone_bound(counts, confidence), confidence, "monotone bound", {"points": counts})


def _bound_basis(points: Sequence[PathPoint]) -> dict:
    return {"points": [(p.hits, p.n) for p in points]}


def mixture_log_weights(points: Sequence[PathPoint]) -> list[np.ndarray]:
    """Per point, log w = log q_1(y) − log Σ_k (n_k/N) q_{α_k}(y) of each judged rollout (the
    balance-heuristic weight; its mean over all N rollouts has expectation 1)."""
    alphas = [p.alpha for p in points]
    counts = np.array([p.n for p in points], dtype=float)
    total = counts.sum()
    log_share = np.where(counts > 0, np.log(np.where(counts > 0, counts / max(total, 1.0), 1.0)), -np.inf)
    out = []
    for p in points:
        judged = [o.rollout for o in p.observations if o.flagged is not None]
        if not judged:
            out.append(np.zeros(0))
            continue
        logs = np.array([[r.grid_logprob(a) for a in alphas] for r in judged])  # (rollouts, points)
        target = np.array([r.logprob_target for r in judged])
        out.append(target - logsumexp(log_share + logs, axis=1))
    return out


def balance_heuristic(points: Sequence[PathPoint],
                      log_weights: Sequence[np.ndarray] | None = None) -> tuple[float, float, np.ndarray]:
    """(μ̂, standard error, per-sample contributions f·w) of the balance-heuristic estimator;
    ``log_weights`` may pass :func:`mixture_log_weights` of the points when already at hand."""
    total = float(sum(p.n for p in points))
    mean_terms, var_terms, contributions = 0.0, 0.0, []
    for p, lw in zip(points, log_weights if log_weights is not None else mixture_log_weights(points)):
        hit = np.array([bool(o.flagged) for o in p.observations if o.flagged is not None], dtype=bool)
        g_arr = np.array([math.exp(x) if h else 0.0 for x, h in zip(lw, hit)])
        contributions.append(g_arr)
        if g_arr.size:
            mean_terms += g_arr.sum()
            if g_arr.size > 1:
                var_terms += g_arr.size * g_arr.var(ddof=1)
    mean = mean_terms / total if total else 0.0
    se = math.sqrt(var_terms) / total if total else 0.0
    return float(mean), float(se), np.concatenate(contributions) if contributions else np.zeros(0)


# decades added to the upper end of path MIS's interval per decade the weights bridge (log10 of the
# hits' share of rollouts over the estimate), for walks that switch to the target after a few tokens
# and for full-reply mixtures; measured on prompts never scored: benchmarks/results/interval_tuning.json
TAIL_WIDENING: dict[str, float] = {"switching": 0.08, "full": 0.25}


def bridge_decades(hits: int, judged: int, mean: float) -> float:
    """How many decades the weights bridge: log10 of the hits' share of the judged rollouts over the
    estimate (0 when either is 0)."""
    return max(0.0, math.log10(hits / judged) - math.log10(mean)) if hits > 0 and judged > 0 and mean > 0 else 0.0


@register_estimator("mis")
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
    if hits == 0:
        return Estimate(method="mis", prompt_id=prompt.id, rate=0.0,
                        interval=monotone_bound_interval(_bound_basis(points), confidence), rollouts=spent,
                        failed=failed, upper_bound_only=True, settings=settings,
                        diagnostics={"points": path, "assumes": "monotone rate along the path"},
                        flags=("no_hits", *budget_flags(budget)))
    per_point = mixture_log_weights(points)
    mean, se, g = balance_heuristic(points, per_point)
    share = float(g.max() / g.sum()) if g.sum() > 0 else 0.0
    ess_hits = float(g.sum() ** 2 / (g**2).sum()) if g.sum() > 0 else 0.0
    log_w = np.concatenate(per_point)
    flagged = np.array([bool(o.flagged) for p in points for o in p.observations if o.flagged is not None], dtype=bool)
    tails = weight_diagnostics(log_w, flagged)
    diagnostics = {"points": path, "standard_error": se, "max_weight_share": share, "ess_hits": ess_hits,
                   **{k: tails[k] for k in ("ess", "khat", "khat_hits", "log10_weight_mean")},
                   "khat_contrib": pareto_khat(g)}
    # the weights' unseen tail: the upper end reaches further the more decades the weights bridge
    # between how often hits were drawn and the estimate (TAIL_WIDENING, measured)
    bridge = bridge_decades(hits, sum(p.n for p in points), mean)
    widen = TAIL_WIDENING["switching" if walk.get("switch_after") is not None else "full"] * bridge
    sampled = hit_interval(mean, se, min(hits, ess_hits), confidence)
    interval = hit_interval(mean, se, min(hits, ess_hits), confidence, widen)
    diagnostics.update({"sampled_interval": [sampled.low, sampled.high], "bridge_decades": bridge,
                        "tail_widening_decades": widen})
    return Estimate(method="mis", prompt_id=prompt.id, rate=mean, interval=interval, rollouts=spent, hits=hits,
                    failed=failed, settings=settings, diagnostics=diagnostics,
                    flags=weight_flags(diagnostics, hits, pooled=True) + budget_flags(budget))
