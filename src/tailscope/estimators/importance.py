"""Importance sampling from a proposal on the logit path (METHODS.md §2).

Draw y_i ∼ q_prop, weight w_i = q_1(y_i) / q_prop(y_i) from exact per-token log-probabilities,
μ̂ = (1/n) Σ f(y_i) w_i (unbiased). The proposal can be a path point α0 (default 0, the
reference), a defensive mixture (per-token ratio bounded by 1/(1 − λ)) or a switching proposal.
"""

from __future__ import annotations

import math

import numpy as np

from ..rollout import Proposal
from ..prompts import Prompt
from ._estimate import Estimate
from ._flags import weight_flags
from ._pareto import pareto_khat
from ._interval import Interval, interval_rule, zero_hit_upper_bound
from ._registry import register_estimator
from ._source import RolloutSource
from ._weights import hit_interval, weight_diagnostics

__all__ = ["importance"]


@interval_rule("zero-hit bound, scaled")
def scaled_zero_hit_bound(basis, confidence: float) -> Interval:
    """0 hits in n rollouts of a proposal: the exact bound on its rate times the largest weight seen."""
    n, scale = int(basis["n"]), float(basis["scale"])
    return Interval(0.0, min(1.0, zero_hit_upper_bound(n, confidence) * scale), confidence,
                    "zero-hit bound, scaled", {"n": n, "scale": scale})


@register_estimator("is")
def importance(
    source: RolloutSource,
    prompt: Prompt,
    budget: int,
    *,
    proposal: Proposal | str | float = 0.0,
    confidence: float = 0.95,
) -> Estimate:
    """Importance-sampling estimate of the target's rate from ``budget`` rollouts of ``proposal``.

    The interval is the envelope of a log-scale standard-error interval and a hit-count interval
    (see :func:`~tailscope.estimators._weights.hit_interval`). With no
    hits the estimate is an upper bound: 3/n-style on the proposal's own rate times the largest
    weight a hit could plausibly carry (the largest weight observed, at least 1); this assumes the
    behaviour's weights are not larger than the weights seen, and says so in ``diagnostics``.
    """
    if budget < 1:
        raise ValueError(f"`budget` (={budget}) must be >= 1")
    proposal = Proposal.parse(proposal)
    obs = [o for o in source.draw(prompt, proposal, budget)]
    judged = [o for o in obs if o.flagged is not None]
    n = len(judged)
    log_w = np.array([o.rollout.logprob_target - o.rollout.logprob for o in judged])
    flagged = np.array([bool(o.flagged) for o in judged], dtype=bool)
    k = int(flagged.sum())
    settings = {"budget": budget, "proposal": proposal.key}
    diagnostics = weight_diagnostics(log_w, flagged)
    spent = {proposal.key: len(obs)}
    if k == 0:
        worst = max(1.0, float(np.exp(log_w.max()))) if n else 1.0
        diagnostics["upper_bound_assumes_weights_at_most"] = worst
        return Estimate(method="is", prompt_id=prompt.id, rate=0.0,
                        interval=scaled_zero_hit_bound({"n": n, "scale": worst}, confidence), rollouts=spent,
                        failed=len(obs) - n, upper_bound_only=True, settings=settings, diagnostics=diagnostics,
                        flags=("no_hits",))
    contrib = np.where(flagged, np.exp(np.where(flagged, log_w, -np.inf)), 0.0)
    mean = float(contrib.mean())
    se = float(contrib.std(ddof=1) / math.sqrt(n)) if n > 1 else mean
    diagnostics["standard_error"] = se
    diagnostics["khat_contrib"] = pareto_khat(contrib)
    interval = hit_interval(mean, se, min(k, diagnostics["ess_hits"]), confidence)
    return Estimate(method="is", prompt_id=prompt.id, rate=mean, interval=interval, rollouts=spent, hits=k,
                    failed=len(obs) - n, settings=settings, diagnostics=diagnostics,
                    flags=weight_flags(diagnostics, k))
