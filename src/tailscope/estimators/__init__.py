"""Rare-rate estimators (METHODS.md §2). Every one returns an :class:`Estimate`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..prompts import Prompt
from ._estimate import Estimate, clopper_pearson, zero_hit_upper_bound
from ._source import LiveSource, Observation, RolloutSource, StoreSource, judge_text
from .extrapolation import FAMILIES, PathFit, PathShape, fit_path, learn_shape, lpe
from .forecast import TailForecast, forecast
from .importance import importance
from .mis import balance_heuristic, mis, monotone_upper_bound
from .naive import naive
from .schedule import DEFAULT_GRID, PathPoint, walk_path

METHODS: dict[str, Callable[..., Estimate]] = {"naive": naive, "is": importance, "mis": mis, "lpe": lpe}


def estimate(method: str, source: RolloutSource, prompt: Prompt, budget: int, **settings: Any) -> Estimate:
    """Run the estimator named ``method`` (``naive``, ``is``, ``mis`` or ``lpe``) on one prompt."""
    if method not in METHODS:
        raise ValueError(f"`method` (={method!r}) must be one of {sorted(METHODS)}")
    return METHODS[method](source, prompt, budget, **settings)


__all__ = sorted([
    "DEFAULT_GRID", "Estimate", "FAMILIES", "LiveSource", "METHODS", "Observation", "PathFit", "PathPoint", "PathShape",
    "RolloutSource", "StoreSource", "TailForecast", "balance_heuristic", "clopper_pearson", "estimate",
    "fit_path", "forecast", "importance", "judge_text", "learn_shape", "lpe", "mis", "monotone_upper_bound", "naive",
    "walk_path", "zero_hit_upper_bound",
])
