"""The command line's side of workers: the shared flags, one Ray session per command, one
progress bar across workers and the per-worker throughput table.

Commands take the flags below (``--workers``, ``--ray``, ``--gpus-per-worker``,
``--threads-per-worker``), turn them into :class:`ScaleOptions` with :func:`scale_options`, and
wrap their run in :func:`ray_session`; inside it :meth:`Session.distribute` gives a
:class:`~tailscope.scale.RaySampler` for a loaded sampler and :meth:`Session.sampler` one for
model specs the driver never loads.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import typer

from ._spec import PairSpec, SamplerSettings, require_ray

__all__ = ["GPUS_PER_WORKER", "RAY", "THREADS_PER_WORKER", "WORKERS", "ScaleOptions", "Session", "ray_session",
           "scale_options", "with_workers"]

WORKERS: Optional[int] = typer.Option(
    None, "--workers", help="Sample on N Ray workers, each holding its own copy of the models (needs tailscope\\[ray]).")
RAY: Optional[str] = typer.Option(
    None, "--ray", metavar="ADDRESS",
    help="Use a running Ray cluster: its address, or 'auto' for RAY_ADDRESS / the local `ray start --head` one.")
GPUS_PER_WORKER: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs per worker (fractions share one).")
THREADS_PER_WORKER: Optional[int] = typer.Option(
    None, "--threads-per-worker", help="Torch threads (and CPUs reserved) per worker; default 1.")


@dataclass(frozen=True)
class ScaleOptions:
    """Where to sample: ``workers`` Ray workers (None: as many as the cluster has room for), on the
    cluster at ``address`` (``auto``: ``RAY_ADDRESS`` or the running local cluster; None: a private
    local one started for the command)."""

    workers: int | None = None
    address: str | None = None
    gpus_per_worker: float = 0.0
    threads_per_worker: int | None = None


def scale_options(workers: int | None, ray: str | None, gpus_per_worker: float = 0.0,
                  threads_per_worker: int | None = None) -> ScaleOptions | None:
    """The flags as options, or None when sampling stays in this process.

    Raises:
        ValueError: a bad number, or worker settings without ``--workers``/``--ray``.
        ImportError: Ray is not installed (the message says how to get it).
    """
    if workers is None and ray is None:
        if gpus_per_worker or threads_per_worker is not None:
            raise ValueError("--gpus-per-worker and --threads-per-worker need --workers N or --ray")
        return None
    if workers is not None and workers < 1:
        raise ValueError(f"--workers (={workers}) must be >= 1")
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker (={gpus_per_worker}) must be >= 0")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise ValueError(f"--threads-per-worker (={threads_per_worker}) must be >= 1")
    require_ray()
    return ScaleOptions(workers, ray, float(gpus_per_worker), threads_per_worker)


@dataclass
class Session:
    """One Ray session for a command; at most one pool of workers is alive at a time (a suite that
    moves to another organism or reply length gets a new pool, and the old one frees its CPUs)."""

    options: ScaleOptions
    ray: Any
    live: Any = None
    throughput: list[dict[str, Any]] = field(default_factory=list)
    bar: Any = None
    task: Any = None
    sampled: int = 0
    clock: float | None = None  # when the current pool was ready: the rate leaves out start-up

    def advance(self, k: int) -> None:
        """One finished unit of ``k`` rollouts, from any worker."""
        self.sampled += k
        if self.bar is not None:
            rate = self.sampled / max(time.perf_counter() - (self.clock or time.perf_counter()), 1e-9)
            self.bar.update(self.task, advance=k, rate=f"{rate:,.1f} rollouts/s")

    def expect(self, total: int, done: int = 0) -> None:
        """Set the bar's budget: ``total`` rollouts, ``done`` of them already in the store."""
        if self.bar is not None:
            self.bar.update(self.task, total=total, completed=done)

    def _workers(self) -> int:
        if self.options.workers is not None:
            return self.options.workers
        resources = self.ray.cluster_resources()  # a cluster: as many workers as it has room for
        if self.options.gpus_per_worker:
            return max(1, int(resources.get("GPU", 0) // self.options.gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // (self.options.threads_per_worker or 1)))

    def sampler(self, spec: PairSpec, settings: SamplerSettings, *, device: str = "cpu") -> Any:
        """A pool for the pair at ``spec`` (the driver loads no model)."""
        from ._pool import RaySampler

        key = (spec, settings, device)
        if self.live is not None and self.live[0] == key:
            return self.live[1]
        self.close_pool()
        pool = RaySampler(spec, settings, workers=self._workers(), gpus_per_worker=self.options.gpus_per_worker,
                          threads_per_worker=self.options.threads_per_worker, device=device,
                          progress=self.advance)
        self.live = (key, pool)
        if self.clock is None:
            self.clock = time.perf_counter()
        return pool

    def distribute(self, sampler: Any) -> Any:
        """A pool reproducing a loaded :class:`~tailscope.sampling.PathSampler`."""
        return self.sampler(PairSpec.of(sampler.pair), SamplerSettings.of(sampler), device=str(sampler.pair.device))

    def workers_summary(self) -> list[dict[str, Any]]:
        """Per-worker throughput so far (units, rollouts, seconds, rollouts/s, restarts), for JSON."""
        return _merge(self.throughput, self.live[1].throughput()) if self.live is not None else list(self.throughput)

    def close_pool(self) -> None:
        if self.live is not None:
            pool = self.live[1]
            self.throughput = _merge(self.throughput, pool.throughput())
            pool.close()
            self.live = None


def _merge(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-worker totals over the pools a command used."""
    out = {d["worker"]: dict(d) for d in a}
    for d in b:
        if d["worker"] not in out:
            out[d["worker"]] = dict(d)
            continue
        t = out[d["worker"]]
        for k in ("units", "rollouts", "seconds", "restarts", "lost_units"):
            t[k] = t[k] + d[k]
        t["rollouts_per_second"] = round(t["rollouts"] / t["seconds"], 2) if t["seconds"] > 0 else 0.0
    return [out[k] for k in sorted(out)]


@contextlib.contextmanager
def ray_session(options: ScaleOptions, console: Any, *, budget: int | None = None, done: int = 0) -> Iterator[Session]:
    """Start (or join) Ray for one command, show one rollouts bar across all workers (``done`` of
    ``budget``, rollouts/s), and on exit stop the workers and print each worker's throughput."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        from ._pool import start_ray

        start_ray(ray, address=options.address, workers=options.workers or 1,
                  threads_per_worker=options.threads_per_worker)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    bar = Progress(*columns, console=console, transient=False)
    task = bar.add_task("rollouts on workers", total=budget, completed=done, rate="")
    session = Session(options, ray, bar=bar, task=task)
    try:
        with bar:
            yield session
    finally:
        session.close_pool()
        if started:
            ray.shutdown()
    _print_throughput(session.throughput, console)


_FLAGS = {  # name -> (default, annotation): the flags every distributed command takes
    "workers": (WORKERS, Optional[int]),
    "ray": (RAY, Optional[str]),
    "gpus_per_worker": (GPUS_PER_WORKER, float),
    "threads_per_worker": (THREADS_PER_WORKER, Optional[int]),
}


def with_workers(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command the worker flags. The command takes ``pool``: None in process, else the
    :class:`Session` its run is wrapped in (its bar, its Ray session, the throughput table after)."""
    sig = inspect.signature(command)
    params = [p for p in sig.parameters.values() if p.name != "pool"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, (default, _) in _FLAGS.items()]

    @functools.wraps(command)
    def wrapper(*args: Any, workers: int | None = None, ray: str | None = None, gpus_per_worker: float = 0.0,
                threads_per_worker: int | None = None, **kwargs: Any) -> Any:
        from rich.markup import escape  # messages hold brackets: tailscope[ray]

        from ..cli._common import console, fail

        try:
            options = scale_options(workers, ray, gpus_per_worker, threads_per_worker)
        except (ValueError, ImportError) as e:
            raise fail(escape(str(e))) from None
        if options is None:
            return command(*args, pool=None, **kwargs)
        from ._spec import WorkerError

        try:
            with ray_session(options, console) as session:
                return command(*args, pool=session, **kwargs)
        except WorkerError as e:
            raise fail(escape(str(e))) from None

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**command.__annotations__, **{k: t for k, (_, t) in _FLAGS.items()}}
    return wrapper


def _print_throughput(rows: list[dict[str, Any]], console: Any) -> None:
    if not rows:
        return
    from rich.table import Table

    table = Table(title="per-worker throughput (seconds spent sampling, on the worker)")
    for col in ("worker", "units", "rollouts", "seconds", "rollouts/s", "restarts", "units lost and redone"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["worker"]), str(r["units"]), f"{r['rollouts']:,}", f"{r['seconds']:.1f}",
                      f"{r['rollouts_per_second']:,.1f}", str(r["restarts"]), str(r["lost_units"]))
    console.print(table)
