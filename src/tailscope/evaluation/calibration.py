"""Settings an evaluation chooses on a calibration split of prompts, never on the prompts it scores.

A method spec may ask for a setting to be tuned (METHODS.md §2):

* ``{"method": "is", "proposal": "tune"}`` — the IS proposal (α0, mixture λ, switch point) by the
  cross-entropy search of :func:`~tailscope.estimators.tuning.tune_proposal`;
* ``{"method": "mis", "switch_after": "tune"}`` — the switch point of path MIS's proposals by
  :func:`~tailscope.estimators.tuning.tune_switch`;
* ``{"method": "lpe", "family": "log-shape", "shape": "learn"}`` — LPE's shared path shape, by
  :func:`~tailscope.estimators.learn_shape` on the path points (α < 1 only, never the target's
  rate) of the unscored prompts whose rate at the last grid point lies in 1e-5..1e-3. The points
  are read from the organism's exact path rates, standing in for a generous calibration budget
  (about 10^4–10^5 rollouts per point) that a user spends once per model pair; the result says so.

:func:`resolve_tuned` runs each search once on the calibration prompts (through the same rollout
source, so its rollouts are stored and resumable) and returns the specs with the chosen values,
plus a record of what was chosen, on which prompts, at what cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..prompts import Prompt

__all__ = ["LEARN", "TUNE", "UnusableOrganismError", "calibration_split", "learn_path_shape", "needs_tuning",
           "resolve_tuned"]

TUNE, LEARN = "tune", "learn"


def needs_tuning(methods: dict[str, dict[str, Any]]) -> bool:
    return any(v in (TUNE, LEARN) for spec in methods.values() for v in spec.values())


class UnusableOrganismError(ValueError):
    """The organism's ground truth cannot serve a suite's protocol (e.g. no rates in the window it needs)."""


def learn_path_shape(organism: Any, scored: Sequence[str], window: tuple[float, float] = (1e-5, 1e-3)):
    """(PathShape, prompt ids) from the path points of the unscored prompts of ``organism``."""
    from ..estimators import DEFAULT_GRID, learn_shape

    alphas = list(DEFAULT_GRID)
    last = f"{alphas[-1]:g}"
    rows, ids = [], []
    for pid, entry in organism.ground_truth.items():
        path = entry.get("alpha_rates", {})
        if pid in set(scored) or not all(f"{a:g}" in path for a in alphas):
            continue
        if window[0] <= path[last] <= window[1]:
            rows.append([np.log(max(path[f"{a:g}"], 1e-300)) for a in alphas])
            ids.append(pid)
    if len(rows) < 3:
        raise UnusableOrganismError(f"learning a path shape needs 3 calibration prompts with a rate at α = {last} in "
                                    f"{window}, have {len(rows)}: this organism's rates are outside the window")
    return learn_shape(alphas, np.array(rows)), ids


def calibration_split(prompts: Sequence[Prompt], scored: Sequence[str], k: int, seed: int = 0) -> list[Prompt]:
    """``k`` prompts drawn at random (seeded) from those not scored (the rule of
    :func:`~tailscope.estimators.tuning.calibration_split`); a user's split knows no rates."""
    from ..estimators.tuning import calibration_split as split

    return split(prompts, k, seed=seed, exclude=scored)


def resolve_tuned(
    methods: dict[str, dict[str, Any]],
    source: Any,
    scorer: Any,
    calibration: Sequence[Prompt],
    budget: int,
    *,
    organism: Any = None,
    scored: Sequence[str] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The specs with every ``"tune"`` replaced by the value chosen on ``calibration`` (and every
    ``"learn"`` shape by one learned on ``organism``'s unscored prompts); the record."""
    from ..estimators.tuning import tune_settings

    resolved, record = {}, {}
    for name, spec in methods.items():
        spec = dict(spec)
        method = spec.pop("method")
        spec, searched = tune_settings(method, spec, source, scorer, calibration, budget)
        spec = {"method": method, **spec}
        if searched:
            record[name] = searched
        if spec.get("shape") == LEARN:
            if organism is None:
                raise ValueError(f"{name}: learning a path shape needs the organism's path points")
            spec["shape"], ids = learn_path_shape(organism, scored)
            record[name] = {"shape": "learned", "calibration_prompts": ids, "rollouts": None,
                            "source": "exact path rates at α ≤ 0.9 of unscored prompts (stand-in for a "
                                      "generous calibration budget; the target's rate is never read)"}
        resolved[name] = spec
    return resolved, record
