"""Where estimators get judged rollouts: a store-backed source (resumable) or an in-memory one.

An estimator asks ``source.draw(prompt, proposal, n, grid)`` for the rollouts with seed indices
0..n−1 at a proposal, each with its verdict. Asking again for more returns the same first rollouts
plus new ones: nothing is sampled twice, and the rollouts spent at a proposal is the largest n asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..prompts import Prompt
from ..rollout import Proposal, Rollout, judge_text

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


class LiveSource:
    """Samples through a PathSampler and judges at once, caching in memory (nothing is persisted)."""

    def __init__(self, sampler: PathSampler, judge: Any):
        self.sampler, self.judge = sampler, judge
        self._cache: dict[tuple[str, str], list[Observation]] = {}

    def draw(self, prompt: Prompt, proposal: Proposal, n: int, grid: Sequence[float] = ()) -> list[Observation]:
        proposal = Proposal.parse(proposal)
        grid = tuple(float(a) for a in grid)
        have = self._cache.setdefault((prompt.id, proposal.key), [])
        if len(have) < n:
            new = self.sampler.sample([prompt], n - len(have), proposal, logprob_grid=grid, seed_offset=len(have))
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
        rollouts = self.store.get_or_sample(self.sampler, prompt, proposal, n, logprob_grid=grid,
                                            progress=self.progress)
        verdicts = self.store.judge(self.judge, rollouts)
        return [Observation(r, v.flagged) for r, v in zip(rollouts, verdicts)]


def _with_grid(r: Rollout, grid: dict[float, float]) -> Rollout:
    from dataclasses import replace

    return replace(r, logprob_grid=grid)
