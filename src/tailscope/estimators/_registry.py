"""The estimator protocol and the registry that names estimators (like the judges' registry).

An estimator is any callable ``(source, prompt, budget, **settings) -> Estimate``. The built-in
ones register themselves with :func:`register_estimator`; a plug-in can be named without being
registered, as ``module:function`` (imported when first used).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..prompts import Prompt
    from ._estimate import Estimate
    from ._source import RolloutSource

__all__ = ["Estimator", "estimate", "estimator_names", "get_estimator", "register_estimator"]


@runtime_checkable
class Estimator(Protocol):
    """Estimates one prompt's rate from at most ``budget`` rollouts drawn through ``source``."""

    def __call__(self, source: RolloutSource, prompt: Prompt, budget: int, /, **settings: Any) -> Estimate: ...


_REGISTRY: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Register an estimator under ``name`` (``--method NAME`` on the command line)."""

    def wrap(fn: Estimator) -> Estimator:
        if name in _REGISTRY:
            raise ValueError(f"an estimator named {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def estimator_names() -> list[str]:
    """The registered estimators, sorted."""
    return sorted(_REGISTRY)


def get_estimator(name: str) -> Estimator:
    """The estimator registered as ``name``, or the object a ``module:function`` name points to.

    Raises:
        ValueError: no such estimator, or the plug-in cannot be imported.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"`method` (={name!r}) must be one of {estimator_names()} or a plug-in 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"estimator plug-in {name!r} cannot be loaded: {e}") from e
    if not callable(fn):
        raise ValueError(f"estimator plug-in {name!r} is not callable")
    return fn


def estimate(method: str, source: RolloutSource, prompt: Prompt, budget: int, **settings: Any) -> Estimate:
    """Run the estimator named ``method`` (``naive``, ``is``, ``mis``, ``lpe`` or a plug-in) on one prompt."""
    return get_estimator(method)(source, prompt, budget, **settings)
