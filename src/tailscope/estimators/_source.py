"""Where estimators get judged rollouts: a store-backed source (resumable) or an in-memory one.

An estimator asks ``source.draw(prompt, proposal, n, grid)`` for the rollouts with seed indices
0..n−1 at a proposal, each with its verdict; ``draw_many`` asks the same of several prompts at once
(sampled together, in shared batches). Asking again for more returns the same first rollouts plus
new ones: nothing is sampled twice, and the rollouts spent at a proposal is the largest n asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..prompts import Prompt
from ..rollout import Proposal, Rollout, SampleRequest, judge_text

if TYPE_CHECKING:  # the sampler (and torch) only where rollouts are drawn
    from ..sampling import PathSampler

__all__ = ["LiveSource", "Observation", "RolloutSource", "StoreSource", "judge_text"]


@dataclass(frozen=True)
class Observation:
    """A rollout and the judge's verdict on it (None when the judge failed on it)."""

    rollout: Rollout
    flagged: bool | None


class RolloutSource(Protocol):
    def draw(self, prompt: Prompt, proposal: Proposal, n: int, grid: Sequence[float] = ()) -> list[Observation]:
        """Judged rollouts with seed indices 0..n−1 at ``proposal``, each carrying log q_β for β in ``grid``."""
        ...

    def draw_many(self, prompts: Sequence[Prompt], proposal: Proposal, n: int,
                  grid: Sequence[float] = ()) -> dict[str, list[Observation]]:
        """:meth:`draw` for each prompt, by prompt id, the prompts' rollouts sampled together."""
        ...


class LiveSource:
    """Samples through a PathSampler and judges at once, caching in memory (nothing is persisted)."""

    def __init__(self, sampler: PathSampler, judge: Any, progress: Any = None):
        self.sampler, self.judge, self.progress = sampler, judge, progress
        self._cache: dict[tuple[str, str], list[Observation]] = {}

    def draw_many(self, prompts: Sequence[Prompt], proposal: Proposal, n: int,
                  grid: Sequence[float] = ()) -> dict[str, list[Observation]]:
        proposal = Proposal.parse(proposal)
        grid = tuple(float(a) for a in grid)
        requests = [SampleRequest(p, i) for p in prompts
                    for i in range(len(self._cache.get((p.id, proposal.key), ())), n)]
        by_id = {p.id: p for p in prompts}
        fresh: dict[str, list[Rollout]] = {}
        for batch in self.sampler.iter_batches(requests, proposal, logprob_grid=grid, progress=self.progress):
            for r in batch:
                fresh.setdefault(r.prompt_id, []).append(r)
        for pid, rollouts in fresh.items():
            self._cache.setdefault((pid, proposal.key), []).extend(self._judged(by_id[pid], rollouts))
        return {p.id: self.draw(p, proposal, n, grid) for p in prompts}

    def draw(self, prompt: Prompt, proposal: Proposal, n: int, grid: Sequence[float] = ()) -> list[Observation]:
        proposal = Proposal.parse(proposal)
        grid = tuple(float(a) for a in grid)
        have = self._cache.setdefault((prompt.id, proposal.key), [])
        if len(have) < n:
            new = self.sampler.sample([prompt], n - len(have), proposal, logprob_grid=grid, seed_offset=len(have),
                                      progress=self.progress)
            have.extend(self._judged(prompt, new))
        obs = have[:n]
        lacking = [i for i, o in enumerate(obs) if not all(a in o.rollout.logprob_grid for a in grid)]
        if lacking:
            scores = self.sampler.scorer().score_rollouts({prompt.id: prompt}, [obs[i].rollout for i in lacking], grid)
            for i, row in zip(lacking, scores):
                r = obs[i].rollout
                merged = {**r.logprob_grid, **{a: float(v) for a, v in zip(grid, row)}}
                obs[i] = have[i] = Observation(_with_grid(r, merged), obs[i].flagged)
        failed = [i for i, o in enumerate(obs) if o.flagged is None]
        if failed:
            again = self._judged(prompt, [obs[i].rollout for i in failed])
            for i, o in zip(failed, again):
                obs[i] = have[i] = o
        return obs

    def _judged(self, prompt: Prompt, rollouts: Sequence[Rollout]) -> list[Observation]:
        verdicts = self.judge.judge([(judge_text(prompt), r.text) for r in rollouts])
        return [Observation(r, v.flagged) for r, v in zip(rollouts, verdicts)]


class StoreSource:
    """Rollouts and verdicts through a :class:`~tailscope.store.RunStore`: resumable, never sampled twice."""

    def __init__(self, store: Any, sampler: PathSampler, judge: Any, progress: Any = None):
        self.store, self.sampler, self.judge, self.progress = store, sampler, judge, progress

    def draw(self, prompt: Prompt, proposal: Proposal, n: int, grid: Sequence[float] = ()) -> list[Observation]:
        return self.draw_many([prompt], proposal, n, grid)[prompt.id]

    def draw_many(self, prompts: Sequence[Prompt], proposal: Proposal, n: int,
                  grid: Sequence[float] = ()) -> dict[str, list[Observation]]:
        by_prompt = self.store.get_or_sample_many(self.sampler, prompts, proposal, n, logprob_grid=grid,
                                                  progress=self.progress)
        rollouts = [r for p in prompts for r in by_prompt[p.id]]
        flagged = iter(v.flagged for v in self.store.judge(self.judge, rollouts))
        return {p.id: [Observation(r, next(flagged)) for r in by_prompt[p.id]] for p in prompts}


def _with_grid(r: Rollout, grid: dict[float, float]) -> Rollout:
    from dataclasses import replace

    return replace(r, logprob_grid=grid)
