"""Pieces shared by the CLI commands: the console, progress bars, parsing helpers, error exits."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error for people and return the exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


class Bar:
    """One stage of work counted in rollouts: ``advance(k)`` as rollouts land, ``finish()`` at the end
    (rollouts reused from a run store never tick, and a method may spend less than its budget)."""

    def __init__(self, progress: Progress, task: Any, total: int):
        self._progress, self._task, self.total = progress, task, total

    def __call__(self, k: int = 1) -> None:
        self._progress.advance(self._task, k)

    def set(self, completed: int) -> None:
        self._progress.update(self._task, completed=min(completed, self.total))

    def at_least(self, completed: int) -> None:
        """Move up to ``completed`` if behind it (work found done in a run store, which never ticks)."""
        now = next(t.completed for t in self._progress.tasks if t.id == self._task)
        if completed > now:
            self.set(completed)

    def finish(self) -> None:
        self._progress.update(self._task, completed=self.total)


def _columns(unit: str = "rollouts") -> list:
    return [TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TextColumn(unit),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Bar]:
    """A rich progress bar on stderr counting rollouts, with elapsed time and an ETA; yields a :class:`Bar`."""
    with Progress(*_columns(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        handle = Bar(bar, task, total)
        yield handle
        handle.finish()


@contextlib.contextmanager
def stages() -> Iterator[Callable[[str, int], Bar]]:
    """Several rollout-counting bars under one display; yields ``start(description, total) -> Bar``."""
    with Progress(*_columns(), console=console, transient=False) as bar:
        def start(description: str, total: int) -> Bar:
            return Bar(bar, bar.add_task(description, total=total), total)

        yield start


@contextlib.contextmanager
def staged_progress(unit: str = "") -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, done, total)`` callback for library code: one bar with an ETA per stage
    (``total`` 0: an open-ended stage whose ``done`` is an increment)."""
    with Progress(*_columns(unit), console=console, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            if total:
                bar.update(tasks[stage], completed=done, total=total)
            else:
                bar.advance(tasks[stage], done)

        yield progress


def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise fail(f"{what} must be comma-separated numbers, got {text!r}") from None


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path: Path | None, payload: Any) -> None:
    """``--json PATH``: write the payload there; ``-`` prints it on standard output."""
    if path is None:
        return
    text = json.dumps(payload, indent=1, default=str, ensure_ascii=False)
    if str(path) == "-":
        typer.echo(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    console.print(f"wrote {path}")


def _busy_cores(window: float = 0.3) -> float:
    """Cores' worth of CPU time the machine spends right now (over ``window`` seconds), from /proc/stat;
    the 1-minute load average where that file is missing (it lags by a minute)."""
    import os
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    cores = os.cpu_count() or 1
    spent = total1 - total0
    return cores * (spent - (idle1 - idle0)) / spent if spent > 0 else 0.0


def choose_threads(requested: int | None) -> tuple[int, str]:
    """torch's CPU thread count for this process, and why.

    An explicit request (``--threads`` / ``TAILSCOPE_THREADS``) wins, then ``OMP_NUM_THREADS``;
    otherwise one thread per core that other work is not using right now: two threads on two cores
    that another job shares spend their time waiting on each other, many times slower than one.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested is not None:
        return requested, "asked for"
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) >= 1:
        return int(omp), "OMP_NUM_THREADS"
    busy = _busy_cores()
    free = max(1, min(cores, round(cores - busy)))
    if free < cores:
        return free, f"{busy:.1f} of {cores} cores busy with other work"
    return cores, f"{cores} idle cores"


def use_threads(requested: int | None) -> int:
    """Set torch's thread count for this command (the library never does); say so when it is not every core."""
    import torch

    count, why = choose_threads(requested)
    torch.set_num_threads(count)
    if why.endswith("other work"):
        console.print(f"[dim]{why}: using {count} torch thread{'s' if count > 1 else ''} "
                      "(--threads or TAILSCOPE_THREADS to choose)[/]")
    return count
