"""Reasons not to trust an estimate's interval: short machine names, each with an explanation.

An estimate's ``flags`` lists the names whose rule fired. The names are stable: they appear in
JSON, tables and reports. The thresholds are measured choices (docs/methods.md, "When an
interval is flagged"): each was picked on the calibration suite, ``tailscope evaluate calibration``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["FLAGS", "RULES", "budget_flags", "explain", "lpe_flags", "weight_flags"]

# the measured thresholds (see the module docstring)
RULES: dict[str, float] = {
    "khat": 0.7,  # Pareto k̂ of the weights (Vehtari et al. 2024)
    "ess_hits": 1.1,  # the hits' effective sample size (Kish): below it one rollout carries the estimate
    "hits": 5,  # judged hits over the whole estimate
    "budget": 300,  # path MIS and LPE: the smallest budget at which their intervals were calibrated
    "lpe_extrapolation": 0.4,  # distance from LPE's last fitted point to α = 1
    "lpe_fit_p": 0.01,  # Pearson χ² test of LPE's fit at its points
}

FLAGS: dict[str, str] = {
    "pareto_k>0.7": "the importance weights have a tail so heavy (Pareto k̂ > 0.7, Vehtari et al. 2024) that the "
                    "standard error, and the interval built on it, cannot be trusted",
    "small_budget": "fewer than 300 rollouts: below the budgets at which path MIS's and LPE's intervals were "
                    "calibrated (at 100 the default's covered the truth in 0.82 of held-out cases, docs/benchmarks.md)",
    "low_ess": "the hits' effective sample size is below 1.1: the estimate rests on one heavily weighted rollout",
    "few_hits": "fewer than 5 hits: too few to measure the spread of the estimate",
    "no_hits": "no hits: the interval is an upper bound that rests on an assumption (a rate falling along the path, "
               "or no weights larger than those seen)",
    "lpe_extrapolation": "LPE's last fitted point is at α ≤ 0.6: the trend is carried further than the evaluation "
                         "shows it holds",
    "lpe_poor_fit": "LPE's fitted trend does not describe its own points (Pearson χ² test, p < 0.01)",
    "lpe_capped": "LPE's fitted trend rises toward α = 1 and was cut at the monotone bound",
    "lpe_bootstrap": "too few bootstrap refits succeeded for an interval: it is the monotone bound",
}


def explain(name: str) -> str:
    """The human explanation of a flag (the name itself for a flag this version does not know)."""
    return FLAGS.get(name, name)


def _above(x: Any, limit: float) -> bool:
    # an infinite k̂ means "too few weights for a tail of 5": not measured, so not a verdict
    return isinstance(x, (int, float)) and math.isfinite(x) and x > limit


def weight_flags(diagnostics: Mapping[str, Any], hits: int, *, pooled: bool = False) -> list[str]:
    """Flags of an importance-weighted estimate from its weight diagnostics.

    PSIS's k̂ assumes independent draws from one proposal. For IS (``pooled=False``) that holds
    for all the weights and for the hits' weights alone (the h-specific diagnostic), and either
    k̂ above 0.7 flags. For path MIS (``pooled=True``) the rollouts come from several proposals
    whose weights differ by orders of magnitude, so k̂ (of all weights, the hits' or the hits'
    contributions) is recorded but does not flag: on the calibration suite's tuning prompts it was
    as large where the interval covered as where it missed (docs/methods.md); path MIS's interval
    instead reaches for the unseen tail (:data:`~tailscope.estimators.mis.TAIL_WIDENING`).
    """
    flags = []
    khats = [] if pooled else [diagnostics.get("khat"), diagnostics.get("khat_hits")]
    if any(_above(k, RULES["khat"]) for k in khats):
        flags.append("pareto_k>0.7")
    if hits and diagnostics.get("ess_hits", math.inf) < RULES["ess_hits"]:
        flags.append("low_ess")
    if 0 < hits < RULES["hits"]:
        flags.append("few_hits")
    return flags


def budget_flags(budget: int) -> list[str]:
    """``small_budget`` below the budgets at which the path estimators' intervals were calibrated."""
    return ["small_budget"] if budget < RULES["budget"] else []


def lpe_flags(diagnostics: Mapping[str, Any]) -> list[str]:
    """Flags of an LPE estimate from its fit's diagnostics."""
    flags = []
    fit = diagnostics.get("fit") or {}
    if fit and 1 - fit["alphas"][-1] >= RULES["lpe_extrapolation"] - 1e-9:
        flags.append("lpe_extrapolation")
    p = diagnostics.get("residual_p")
    if p is not None and p < RULES["lpe_fit_p"]:
        flags.append("lpe_poor_fit")
    if diagnostics.get("capped"):
        flags.append("lpe_capped")
    if fit and diagnostics.get("bootstrap_used", 0) < 20:
        flags.append("lpe_bootstrap")
    if fit and sum(fit["hits"]) < RULES["hits"]:
        flags.append("few_hits")
    return flags
