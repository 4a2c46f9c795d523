"""Rare-rate estimators (METHODS.md §2). Every one returns an :class:`Estimate`.

Estimators are registered by name (:func:`register_estimator`); :func:`estimate` runs one by name.
"""

from __future__ import annotations

from ._estimate import Estimate
from ._flags import FLAGS, explain
from ._interval import Interval, clopper_pearson, zero_hit_upper_bound
from ._lockstep import estimate_many
from ._registry import Estimator, estimate, estimator_names, get_estimator, register_estimator
from ._source import LiveSource, Observation, RolloutSource, StoreSource, judge_text
from .extrapolation import FAMILIES, TREND_ERROR, PathFit, PathShape, fit_path, learn_shape, lpe
from .forecast import TailForecast, forecast
from .importance import importance
from .mis import balance_heuristic, mis, monotone_upper_bound
from .naive import naive
from .schedule import DEFAULT_GRID, PathPoint, walk_path

__all__ = sorted([
    "DEFAULT_GRID", "Estimate", "Estimator", "FAMILIES", "FLAGS", "Interval", "LiveSource", "Observation", "PathFit",
    "TREND_ERROR",
    "PathPoint", "PathShape", "RolloutSource", "StoreSource", "TailForecast", "balance_heuristic", "clopper_pearson",
    "estimate", "estimate_many", "estimator_names", "explain", "fit_path", "forecast", "get_estimator", "importance", "judge_text",
    "learn_shape", "lpe", "mis", "monotone_upper_bound", "naive", "register_estimator", "walk_path",
    "zero_hit_upper_bound",
])
