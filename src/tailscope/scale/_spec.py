"""What a worker needs to rebuild the sampler on its own node: the pair's specs and the settings.

Everything here is plain data and imports neither torch nor Ray, so the driver can describe a run
without loading a model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PairSpec", "SamplerSettings", "WorkerError", "WorkerLoadError", "require_ray"]


class WorkerError(RuntimeError):
    """A worker could not do its part (it keeps dying, or it disagrees with the others)."""


class WorkerLoadError(WorkerError):
    """A worker could not load a model; the message names the worker, its node and the model."""


def require_ray() -> Any:
    """Import Ray, or say how to install it."""
    if importlib.util.find_spec("ray") is None:
        raise ImportError("running on workers needs Ray: pip install 'tailscope[ray]'")
    import ray

    return ray


@dataclass(frozen=True)
class PairSpec:
    """How to load the reference and target on a worker: :func:`~tailscope.models.load_model`
    specs (local paths must exist on every node: a shared filesystem, or the same layout), the
    dtype, whether remote code may run and the hub revision of the hub repositories the specs name.
    The device is the worker's (``cpu``, or ``cuda`` for a worker given GPUs, which Ray makes
    visible to it as ``cuda:0``)."""

    reference: str
    target: str
    dtype: str = "float32"
    trust_remote_code: bool = False
    revision: str | None = None

    @classmethod
    def of(cls, pair: Any, *, trust_remote_code: bool = False) -> PairSpec:
        """The spec of an already loaded pair (models loaded by :func:`~tailscope.models.load_model`
        carry their spec as their name, and their revision)."""
        dtype = str(next(pair.target.model.parameters()).dtype).removeprefix("torch.")
        revisions = {r for r in (pair.reference.revision, pair.target.revision) if r is not None}
        if len(revisions) > 1:
            raise ValueError(f"the reference and target were loaded at different hub revisions {sorted(revisions)}; "
                             "a worker loads both at one: download them and give the local directories")
        return cls(pair.reference.name, pair.target.name, dtype, trust_remote_code, next(iter(revisions), None))

    def _load(self, spec: str, device: str) -> Any:
        from ..models import load_model

        return load_model(spec, device=device, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
                          revision=self.revision)

    def load_reference(self, device: str) -> Any:
        return self._load(self.reference, device)

    def load_target(self, device: str, reference: Any) -> Any:
        return reference if self.target == self.reference else self._load(self.target, device)


@dataclass(frozen=True)
class SamplerSettings:
    """The :class:`~tailscope.sampling.PathSampler` arguments other than the pair.

    ``batch_size`` is also the size of a unit of work: a unit is one batch on one worker, exactly
    the batch the in-process sampler would decode, so rollouts are bit-identical whatever the
    number of workers (a row's float log-probabilities depend, at the 1e-6 level, on what else is in
    its batch)."""

    temperature: float = 1.0
    max_new_tokens: int = 64
    top_k: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    batch_size: int = 64
    chat: bool | None = None
    seed: int = 0
    compile: bool = False

    @classmethod
    def of(cls, sampler: Any) -> SamplerSettings:
        return cls(sampler.temperature, sampler.max_new_tokens, sampler.top_k, sampler.top_p, tuple(sampler.stop),
                   sampler.batch_size, sampler.chat, sampler.seed, getattr(sampler, "compile", False))

    def kwargs(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = tuple(d["stop"])
        return d


def remote_cause(error: BaseException) -> BaseException:
    """The exception raised on the worker (a WorkerLoadError, a NonFiniteLogitsError, ...), without
    Ray's wrapper and remote traceback, so a person reads one line."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error
