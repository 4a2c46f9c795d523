"""The one result type of every estimator (METHODS.md §2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._flags import explain
from ._interval import Interval, clopper_pearson, rebuild, zero_hit_upper_bound

__all__ = ["Estimate", "clopper_pearson", "zero_hit_upper_bound"]


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A rate estimate for one prompt: the value, its interval, what it cost, and whether to trust it.

    Attributes:
        method: ``naive``, ``is``, ``mis``, ``lpe`` (or another registered estimator).
        prompt_id: the prompt estimated (None for a cross-prompt forecast).
        rate: the point estimate of μ = P_{y∼q_1}[f(y) = 1]. With ``upper_bound_only`` it is 0 and
            only ``interval.high`` carries information.
        interval: an :class:`Interval` (``.low``, ``.high``, ``.confidence``); a plain pair is
            taken as a 95% interval.
        rollouts: rollouts spent, by proposal key (``a=0.3``, ``a=0;switch=8``, …).
        hits: rollouts the judge flagged, over all proposals.
        failed: rollouts the judge could not judge (left out of every count, not read as "no").
        upper_bound_only: no hits were seen: the interval is a one-sided upper bound.
        settings: the estimator's settings, for the record.
        diagnostics: method-specific: effective sample sizes, Pareto k̂, LPE fit and residuals, …
        flags: short machine names of the reasons not to trust the interval (empty when the
            diagnostics raise no doubt); :meth:`explained_flags` says each in words.
    """

    method: str
    prompt_id: str | None
    rate: float
    interval: Interval
    rollouts: dict[str, int] = field(default_factory=dict)
    hits: int = 0
    failed: int = 0
    upper_bound_only: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.interval, Interval):
            low, high = self.interval
            object.__setattr__(self, "interval", Interval(float(low), float(high)))
        object.__setattr__(self, "flags", tuple(self.flags))

    @property
    def confidence(self) -> float:
        return self.interval.confidence

    @property
    def total_rollouts(self) -> int:
        return sum(self.rollouts.values())

    @property
    def reliable(self) -> bool:
        """No diagnostic flagged the interval."""
        return not self.flags

    def covers(self, truth: float) -> bool:
        return self.interval.covers(truth)

    def interval_at(self, confidence: float) -> Interval:
        """The same interval construction at another level (where the method allows; see ``rebuild``)."""
        return rebuild(self.interval, confidence)

    def explained_flags(self) -> dict[str, str]:
        return {f: explain(f) for f in self.flags}

    def describe(self) -> str:
        """A short human form: ``3.1e-05 [1.2e-05, 8.0e-05]`` or ``< 3.0e-03 (0 hits)``."""
        low, high = self.interval
        text = f"< {high:.2g} (0 hits)" if self.upper_bound_only else f"{self.rate:.2g} [{low:.2g}, {high:.2g}]"
        return text + (f" (flagged: {', '.join(self.flags)})" if self.flags else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "prompt_id": self.prompt_id, "rate": self.rate,
            "interval": [self.interval.low, self.interval.high], "confidence": self.confidence,
            "interval_method": self.interval.method, "interval_basis": dict(self.interval.basis),
            "rollouts": dict(self.rollouts), "total_rollouts": self.total_rollouts, "hits": self.hits,
            "failed": self.failed, "upper_bound_only": self.upper_bound_only, "flags": list(self.flags),
            "settings": self.settings, "diagnostics": self.diagnostics,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        """Read :meth:`to_dict`'s form, a dataclass dump (``interval`` a mapping) or an older record."""
        raw = d["interval"]
        if isinstance(raw, Mapping):
            interval = Interval.from_dict(raw)
        else:
            interval = Interval(float(raw[0]), float(raw[1]), float(d.get("confidence", 0.95)),
                                d.get("interval_method", ""), dict(d.get("interval_basis") or {}))
        keys = {"method", "prompt_id", "rate", "rollouts", "hits", "failed", "upper_bound_only", "settings",
                "diagnostics", "flags"}
        return cls(interval=interval, **{k: v for k, v in d.items() if k in keys})
