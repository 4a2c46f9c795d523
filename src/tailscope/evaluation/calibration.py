"""Settings an evaluation chooses on a calibration split of prompts, never on the prompts it scores.

A method spec may ask for a setting to be tuned (METHODS.md §2):

* ``{"method": "is", "proposal": "tune"}`` — the IS proposal (α0, mixture λ, switch point) by the
  cross-entropy search of :func:`~tailscope.estimators.tuning.tune_proposal`;
* ``{"method": "mis", "switch_after": "tune"}`` — the switch point of path MIS's proposals by
  :func:`~tailscope.estimators.tuning.tune_switch`.

:func:`resolve_tuned` runs each search once on the calibration prompts (through the same rollout
source, so its rollouts are stored and resumable) and returns the specs with the chosen values,
plus a record of what was chosen, on which prompts, at what cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..prompts import Prompt

__all__ = ["TUNE", "calibration_split", "needs_tuning", "resolve_tuned"]

TUNE = "tune"


def needs_tuning(methods: dict[str, dict[str, Any]]) -> bool:
    return any(v == TUNE for spec in methods.values() for v in spec.values())


def calibration_split(prompts: Sequence[Prompt], scored: Sequence[str], k: int, seed: int = 0) -> list[Prompt]:
    """``k`` prompts drawn at random (seeded) from those not scored; a user's split knows no rates."""
    pool = [p for p in prompts if p.id not in set(scored)]
    if len(pool) < k:
        raise ValueError(f"a calibration split of {k} prompts needs {k} unscored prompts, have {len(pool)}")
    rng = np.random.default_rng(seed + 7919)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]


def resolve_tuned(
    methods: dict[str, dict[str, Any]],
    source: Any,
    scorer: Any,
    calibration: Sequence[Prompt],
    budget: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The specs with every ``"tune"`` replaced by the value chosen on ``calibration``; the record."""
    from ..estimators.tuning import tune_proposal, tune_switch

    resolved, record = {}, {}
    for name, spec in methods.items():
        spec = dict(spec)
        if spec.get("proposal") == TUNE:
            search = tune_proposal(source, scorer, calibration, per_prompt=max(50, budget // 2))
            spec["proposal"] = search.proposal.key
            record[name] = {"proposal": spec["proposal"], "rollouts": search.rollouts, "rounds": search.rounds}
        if spec.get("switch_after") == TUNE:
            walk = {k: v for k, v in spec.items() if k in {"grid", "schedule"}}
            search = tune_switch(source, scorer, calibration, budget, **walk)
            spec["switch_after"] = search.switch_after
            record[name] = {"switch_after": search.switch_after, "rollouts": search.rollouts, "rounds": search.rounds}
        if name in record:
            record[name]["calibration_prompts"] = [p.id for p in calibration]
        resolved[name] = spec
    return resolved, record
