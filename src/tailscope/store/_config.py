"""A run's config: what fixes its rollouts, compared field by field when a run is reopened."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..judges import Judge

__all__ = ["ConfigMismatchError", "RunStoreError", "config_differences", "run_config", "sampler_settings"]


class RunStoreError(RuntimeError):
    """A run file that cannot be used: missing, not a run store, corrupted, or misused."""


class ConfigMismatchError(RunStoreError):
    """The run exists with another config; ``differences`` maps each differing field to (stored, given)."""

    def __init__(self, path: Path, differences: dict[str, tuple[Any, Any]]):
        self.differences = differences
        lines = "\n".join(f"  {k}: stored {a!r}, given {b!r}" for k, a, b in
                          ((k, *v) for k, v in sorted(differences.items())))
        super().__init__(f"the run {path} was made with a different config:\n{lines}\n"
                         "Use another run name for the new settings, or the stored settings to resume.")




def _code_version() -> dict[str, str]:
    from .. import __version__

    return {"tailscope": __version__}


def sampler_settings(sampler: Any) -> dict[str, Any]:
    """What fixes a sampler's rollouts (:meth:`Sampler.settings <tailscope.rollout.Sampler.settings>`):
    both models, the shared vocabulary and the sampling settings."""
    return sampler.settings()


def run_config(sampler: Any, *, judge: Judge | str | None = None, **extra: Any) -> dict[str, Any]:
    """The config of a run: :func:`sampler_settings`, the judge's spec, the code version, and any
    ``extra`` JSON-able settings (an estimator's budget, say) that must match on resume."""
    spec = judge if isinstance(judge, str) or judge is None else judge.spec
    config = {**sampler_settings(sampler), "judge": spec, "code": _code_version()}
    if extra:
        config["extra"] = extra
    return _json_roundtrip(config)


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_to_json))


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def is_informative(field: str) -> bool:
    """Fields recorded for people that do not decide rollouts: the code version, and the models' names
    and hub revisions (a moved checkpoint, or another revision with the same weights, keeps its weights
    fingerprint; other weights are refused by that). A difference there warns instead of failing."""
    return field.startswith("code.") or field in (
        "models.reference.name", "models.target.name", "models.reference.revision", "models.target.revision")


def config_differences(stored: Mapping, given: Mapping) -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (stored, given) for every field that differs (missing fields count as None)."""
    a, b = _flatten(stored), _flatten(given)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
