"""Estimates for many prompts at once, their draws sampled together.

An estimator asks its source for rollouts one proposal at a time (a walk along the path: each
step's size depends on the hits seen so far), so one prompt at a time means batches of a few
rollouts at one proposal. Here each prompt's estimator runs unchanged in a thread of its own; the
draws the threads are waiting on are gathered, grouped by proposal and size, and served by one
:meth:`~tailscope.estimators.RolloutSource.draw_many` call per group, in the calling thread (the
only one that touches the source, its sampler and its store). An engine then decodes the tails of
every prompt's openings in one request, and our own loop fills its batches across prompts.

The rollouts are the ones a prompt-at-a-time run draws: a rollout is fixed by its prompt, proposal
and seed index (:class:`~tailscope.rollout.SampleRequest`), not by what it was batched with, so
the estimates are identical (a test checks it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..prompts import Prompt
from ..rollout import Proposal
from ._registry import get_estimator

__all__ = ["estimate_many"]
MAX_AT_ONCE = 512  # prompts estimated together (one thread each); more go in waves of this many


class _Cancelled(Exception):
    """The run stopped (an error elsewhere, or an interrupt) while this draw was waiting."""


@dataclass(eq=False)
class _Draw:
    prompt: Prompt
    proposal: Proposal
    n: int
    grid: tuple[float, ...]
    result: Any = None
    error: BaseException | None = None
    done: bool = False


@dataclass(eq=False)
class _Hub:
    source: Any
    running: int
    cv: threading.Condition = field(default_factory=threading.Condition)
    waiting: list[_Draw] = field(default_factory=list)
    finished: list[tuple[int, Any, BaseException | None]] = field(default_factory=list)
    closed: bool = False

    def draw(self, prompt: Prompt, proposal: Proposal | str | float, n: int, grid: Sequence[float] = ()) -> Any:
        """Called by an estimator's thread: wait until the serving thread has drawn this."""
        item = _Draw(prompt, Proposal.parse(proposal), int(n), tuple(float(a) for a in grid))
        with self.cv:
            if self.closed:
                raise _Cancelled()
            self.waiting.append(item)
            self.cv.notify_all()
            while not item.done and not self.closed:
                self.cv.wait()
        if item.error is not None:
            raise item.error
        if not item.done:
            raise _Cancelled()
        return item.result

    def finish(self, index: int, result: Any, error: BaseException | None) -> None:
        with self.cv:
            self.running -= 1
            self.finished.append((index, result, error))
            self.cv.notify_all()

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()


class _PromptSource:
    """What one prompt's estimator sees: a source whose ``draw`` waits for the shared batch."""

    def __init__(self, hub: _Hub):
        self._hub = hub

    def draw(self, prompt: Prompt, proposal: Proposal | str | float, n: int, grid: Sequence[float] = ()) -> Any:
        return self._hub.draw(prompt, proposal, n, grid)


def estimate_many(
    method: str | Callable[..., Any],
    source: Any,
    prompts: Sequence[Prompt],
    budget: int,
    *,
    on_done: Callable[[int, Any], None] | None = None,
    **settings: Any,
) -> list[Any]:
    """Run ``method`` on every prompt with their draws batched together; the estimates in prompt order.

    ``method`` is a registered estimator name (or a function ``f(source, prompt, budget, **settings)``).
    ``on_done(i, estimate)`` runs in the calling thread as each prompt finishes, in the order they
    finish (record it, advance a progress bar). An error in any estimator or draw stops the run and is
    raised here; what was drawn and stored before it stays in the store.
    """
    prompts = list(prompts)
    if not prompts:
        return []
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError("estimate_many needs distinct prompt ids")
    if len(prompts) > MAX_AT_ONCE:  # one thread per prompt: a very long list goes in waves
        out: list[Any] = []
        for start in range(0, len(prompts), MAX_AT_ONCE):
            done = None if on_done is None else (lambda i, e, start=start: on_done(start + i, e))
            out += estimate_many(method, source, prompts[start:start + MAX_AT_ONCE], budget, on_done=done, **settings)
        return out
    fn = get_estimator(method) if isinstance(method, str) else method  # an unknown name fails here, once
    hub = _Hub(source, running=len(prompts))
    out: list[Any] = [None] * len(prompts)

    def work(i: int) -> None:
        try:
            result = fn(_PromptSource(hub), prompts[i], budget, **settings)
        except _Cancelled:
            result, error = None, None
        except BaseException as e:  # handed to the calling thread, raised there
            result, error = None, e
        else:
            error = None
        hub.finish(i, result, error)

    threads = [threading.Thread(target=work, args=(i,), daemon=True, name=f"estimate-{p.id}")
               for i, p in enumerate(prompts)]
    try:
        for t in threads:
            t.start()
        while True:
            with hub.cv:
                # serve once every estimator still running is waiting on a draw
                while not hub.finished and hub.running and len(hub.waiting) < hub.running:
                    hub.cv.wait()
                finished, hub.finished = hub.finished, []
                batch: list[_Draw] = []
                if not finished:
                    batch, hub.waiting = hub.waiting, []
                running = hub.running
            for i, result, error in finished:  # every finished estimate is handed on before an error is raised
                if error is None:
                    out[i] = result
                    if on_done is not None:
                        on_done(i, result)
            errors = [error for _, _, error in finished if error is not None]
            if errors:
                raise errors[0]
            if batch:
                _serve(hub, batch)
            elif not finished and not running:
                return out
    finally:
        hub.close()


def _serve(hub: _Hub, batch: list[_Draw]) -> None:
    """One draw_many per (proposal, size, grid), in the calling thread; wake the estimators."""
    groups: dict[tuple[str, int, tuple[float, ...]], list[_Draw]] = {}
    for item in batch:
        groups.setdefault((item.proposal.key, item.n, item.grid), []).append(item)
    for (_, n, grid), items in groups.items():
        try:
            drawn = hub.source.draw_many([it.prompt for it in items], items[0].proposal, n, grid)
        except BaseException as e:
            with hub.cv:
                for it in items:
                    it.error, it.done = e, True
                hub.cv.notify_all()
            raise
        with hub.cv:
            for it in items:
                it.result, it.done = drawn[it.prompt.id], True
            hub.cv.notify_all()
