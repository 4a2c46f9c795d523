"""RaySampler: the driver's side of sampling on workers, with the interface of a PathSampler.

The run store asks a sampler for exactly the missing (prompt, seed index) rollouts through
``iter_batches`` and commits each yielded batch, so the driver stays the only writer of the store
and every store guarantee holds unchanged. This sampler cuts the requests into units (one
sampler batch each, the batches the in-process sampler would decode), keeps every worker busy
with up to ``depth`` units, and yields each finished unit's rollouts as it lands. A rollout is a
pure function of (seed, proposal, prompt id, seed index), so a unit lost with its worker is
simply sampled again elsewhere; it is yielded once, when it finishes, so nothing is counted twice
(and the store refuses a second copy of a key anyway).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._scorer import RemoteScorer
from ._spec import PairSpec, SamplerSettings, WorkerError, WorkerLoadError, remote_cause, require_ray
from ._worker import SamplerWorker

__all__ = ["RaySampler", "WorkerStats", "start_ray"]


def start_ray(ray: Any, *, address: str | None, workers: int, threads_per_worker: int | None = None) -> None:
    """Join the cluster at ``address`` (``auto``: ``RAY_ADDRESS`` or the running local one), or with
    no address and no ``RAY_ADDRESS`` start a private cluster on this machine, bound to 127.0.0.1,
    with CPUs for exactly the workers."""
    import os

    quiet = {"log_to_driver": False, "configure_logging": False}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(num_cpus=workers * (threads_per_worker or 1), include_dashboard=False,
                 _node_ip_address="127.0.0.1", **quiet)
    else:
        ray.init(address=address or os.environ["RAY_ADDRESS"], **quiet)


@dataclass
class WorkerStats:
    """What one worker slot did: units and rollouts finished, seconds spent sampling them (on the
    worker), times its process was replaced, and units lost with it and sampled again elsewhere."""

    index: int
    units: int = 0
    rollouts: int = 0
    seconds: float = 0.0
    restarts: int = 0
    lost_units: int = 0

    @property
    def rollouts_per_second(self) -> float:
        return self.rollouts / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.index, "units": self.units, "rollouts": self.rollouts,
                "seconds": round(self.seconds, 3), "rollouts_per_second": round(self.rollouts_per_second, 2),
                "restarts": self.restarts, "lost_units": self.lost_units}


def _lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors that mean the worker (its process or node) went away, not that the unit failed."""
    ex = ray.exceptions
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError",
             "OwnerDiedError", "LocalRayletDiedError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


class RaySampler:
    """Sample through a pool of Ray workers, each holding its own copy of the pair.

    The driver loads no model: the run-config fingerprints come from the workers (all must agree),
    and teacher-forced scoring (:meth:`scorer`) runs on them too.

    Args:
        spec: how each worker loads the pair.
        settings: the sampler settings; ``settings.batch_size`` is the size of a unit.
        workers: number of workers.
        address: a running cluster (``auto``, ``ray://HOST:PORT``, or None: the ``RAY_ADDRESS``
            cluster if set, else a local one started here with ``workers × cpus_per_worker`` CPUs).
        gpus_per_worker: GPUs per worker (its device is then ``cuda``); fractions share a GPU.
        threads_per_worker: torch threads in each worker process (also its CPU reservation);
            None leaves Ray's default (one CPU, ``OMP_NUM_THREADS=1``).
        device: the workers' device when they have no GPU.
        depth: units queued per worker, so a worker never waits for the driver between units.
        max_restarts: times a slot's process may be replaced after dying, before the run stops.
        progress: called with the number of rollouts of each finished unit (one bar for all workers).
    """

    def __init__(
        self,
        spec: PairSpec,
        settings: SamplerSettings,
        *,
        workers: int = 1,
        address: str | None = None,
        gpus_per_worker: float = 0.0,
        threads_per_worker: int | None = None,
        device: str = "cpu",
        depth: int = 2,
        max_restarts: int = 3,
        progress: Callable[[int], None] | None = None,
    ):
        if workers < 1:
            raise ValueError(f"`workers` (={workers}) must be >= 1")
        if gpus_per_worker < 0:
            raise ValueError(f"`gpus_per_worker` (={gpus_per_worker}) must be >= 0")
        if threads_per_worker is not None and threads_per_worker < 1:
            raise ValueError(f"`threads_per_worker` (={threads_per_worker}) must be >= 1")
        self._ray = ray = require_ray()
        self.spec, self.sampler_settings = spec, settings
        for name, value in settings.kwargs().items():  # what the store's config and scoring read
            setattr(self, name, value)
        self.gpus_per_worker, self.threads_per_worker = float(gpus_per_worker), threads_per_worker
        self.device = "cuda" if gpus_per_worker > 0 else device
        self.depth, self.max_restarts, self.progress = max(1, int(depth)), int(max_restarts), progress
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            start_ray(ray, address=address, workers=workers, threads_per_worker=threads_per_worker)
        self._lost = _lost_worker_errors(ray)
        self._actor_class = ray.remote(SamplerWorker)
        self.stats = [WorkerStats(i) for i in range(workers)]
        self.actors = [self._spawn(i) for i in range(workers)]
        try:
            self._settings = self._load_all()
        except BaseException:
            self.close()  # free the workers' CPUs/GPUs (and our local cluster) before reporting
            raise

    # ------------------------------------------------------------------ workers
    def _spawn(self, index: int) -> Any:
        options: dict[str, Any] = {"num_cpus": self.threads_per_worker or 1, "max_restarts": 0}
        if self.gpus_per_worker:
            options["num_gpus"] = self.gpus_per_worker
        return self._actor_class.options(**options).remote(index, self.spec, self.sampler_settings, self.device,
                                                           self.threads_per_worker)

    def _load_all(self) -> dict[str, Any]:
        """Load every worker's pair at once; their weights fingerprints must agree."""
        refs = [a.load.remote() for a in self.actors]
        found = [self._get_load(i, ref) for i, ref in enumerate(refs)]
        for i, s in enumerate(found[1:], 1):
            if s["models"] != found[0]["models"]:
                raise WorkerError(f"worker {i} loaded other weights than worker 0 ({s['models']} vs "
                                  f"{found[0]['models']}): every node must see the same checkpoints")
        return found[0]

    def _get_load(self, index: int, ref: Any) -> dict[str, Any]:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as e:
            raise remote_cause(e) from None
        except self._lost as e:
            raise WorkerLoadError(f"worker {index} died while loading {self.spec.reference!r} and "
                                  f"{self.spec.target!r} (out of memory?): {type(e).__name__}") from None

    def _replace(self, index: int, dead: Any) -> None:
        """Give a slot a new process after its worker died (once per death, however many units it held)."""
        if self.actors[index] is not dead:
            return
        stats = self.stats[index]
        if stats.restarts >= self.max_restarts:
            raise WorkerError(f"worker {index} died {stats.restarts + 1} times; giving up (see the Ray logs: "
                              "out of memory, a lost node, or a crash in the model)")
        stats.restarts += 1
        self._ray.kill(dead, no_restart=True)
        self.actors[index] = self._spawn(index)

    def settings(self) -> dict[str, Any]:
        """The run-config fields that fix the rollouts, as the workers loaded them."""
        return self._settings

    def scorer(self, batch_size: int = 8) -> RemoteScorer:
        """Teacher-forced scoring on the workers (same arithmetic as :class:`~tailscope.scoring.Scorer`)."""
        return RemoteScorer(self, batch_size)

    # ------------------------------------------------------------------ sampling
    def sample(self, prompts: Sequence[Any], n: int, proposal: Any = 1.0, *, logprob_grid: Sequence[float] = (),
               seed_offset: int = 0, progress: Callable[[int], None] | None = None) -> list[Any]:
        """Draw ``n`` rollouts per prompt (as :meth:`~tailscope.sampling.PathSampler.sample`)."""
        from ..rollout import SampleRequest

        requests = [SampleRequest(p, seed_offset + i) for p in prompts for i in range(n)]
        return self.sample_requests(requests, proposal, logprob_grid=logprob_grid, progress=progress)

    def sample_requests(self, requests: Sequence[Any], proposal: Any = 1.0, *, logprob_grid: Sequence[float] = (),
                        progress: Callable[[int], None] | None = None) -> list[Any]:
        """Draw exactly the requested rollouts, in request order."""
        order = {(r.prompt.id, r.seed_index): i for i, r in enumerate(requests)}
        out = [r for b in self.iter_batches(requests, proposal, logprob_grid=logprob_grid, progress=progress)
               for r in b]
        return sorted(out, key=lambda r: order[(r.prompt_id, r.seed_index)])

    def iter_batches(self, requests: Iterable[Any], proposal: Any = 1.0, *, logprob_grid: Sequence[float] = (),
                     progress: Callable[[int], None] | None = None) -> Iterator[list[Any]]:
        """Yield each unit's rollouts as it finishes (in any order; the store orders by seed index)."""
        from ..rollout import Proposal

        key = Proposal.parse(proposal).key
        grid = tuple(float(a) for a in logprob_grid)
        pending = iter(requests)
        retry: deque[tuple[int, list[Any]]] = deque()  # units lost with a worker, sampled first
        inflight: dict[Any, tuple[int, Any, int, list[Any]]] = {}  # ref -> (slot, actor, unit, requests)
        counter = itertools.count()
        try:
            while True:
                self._fill(inflight, retry, pending, counter, key, grid)
                if not inflight:
                    return
                (ref,), _ = self._ray.wait(list(inflight), num_returns=1)
                slot, actor, unit, chunk = inflight.pop(ref)
                try:
                    batch, seconds = self._ray.get(ref)
                except self._lost:
                    self.stats[slot].lost_units += 1
                    self._replace(slot, actor)
                    retry.append((unit, chunk))
                    continue
                except self._ray.exceptions.RayTaskError as e:  # the unit itself failed: the worker's own error
                    raise remote_cause(e) from None
                stats = self.stats[slot]
                stats.units, stats.rollouts, stats.seconds = stats.units + 1, stats.rollouts + len(batch), \
                    stats.seconds + seconds
                for hook in (progress, self.progress):
                    if hook is not None:
                        hook(len(batch))
                yield batch
        finally:
            for ref in inflight:  # a caller that stopped early: drop the queued units
                try:
                    self._ray.cancel(ref)
                except Exception:  # noqa: BLE001 - a unit already running just finishes, unread
                    pass

    def _fill(self, inflight: dict, retry: deque, pending: Iterator[Any], counter: Iterator[int], key: str,
              grid: tuple[float, ...]) -> None:
        """Queue units until every worker holds ``depth`` of them (or the requests run out)."""
        load = [0] * len(self.actors)
        for slot, actor, _, _ in inflight.values():
            if actor is self.actors[slot]:
                load[slot] += 1
        while True:
            slot = min(range(len(load)), key=load.__getitem__)
            if load[slot] >= self.depth:
                return
            if retry:
                unit, chunk = retry.popleft()
            else:
                chunk = list(itertools.islice(pending, self.sampler_settings.batch_size))
                if not chunk:
                    return
                unit = next(counter)
            actor = self.actors[slot]
            inflight[actor.sample.remote(chunk, key, grid)] = (slot, actor, unit, chunk)
            load[slot] += 1

    # ------------------------------------------------------------------ summary and shutdown
    def throughput(self) -> list[dict[str, Any]]:
        """Per-worker units, rollouts and rollouts/s (seconds measured on the worker)."""
        return [s.to_dict() for s in self.stats]

    def close(self) -> None:
        """Stop the workers (and the local Ray cluster, when this sampler started it)."""
        for actor in self.actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RaySampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RaySampler({self.spec.reference!r}, {self.spec.target!r}, workers={len(self.stats)}, "
                f"device={self.device!r}, batch_size={self.sampler_settings.batch_size})")

    @classmethod
    def from_sampler(cls, sampler: Any, **kwargs: Any) -> RaySampler:
        """Workers that reproduce a loaded :class:`~tailscope.sampling.PathSampler` (same pair specs and settings)."""
        return cls(PairSpec.of(sampler.pair), SamplerSettings.of(sampler), **kwargs)
