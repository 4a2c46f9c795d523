"""Teacher-forced scoring on the workers, so the driver never holds the pair.

Rows are cut at multiples of the scorer's batch size and spread over the workers; each worker's
:class:`~tailscope.scoring.Scorer` then sees exactly the batches an in-process scorer would, so the
values are the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._spec import remote_cause

__all__ = ["RemoteScorer"]


class RemoteScorer:
    """The :class:`~tailscope.scoring.Scorer` interface (``token_logprobs``, ``score``,
    ``score_rollouts``) over a :class:`~tailscope.scale.RaySampler`'s workers."""

    def __init__(self, pool: Any, batch_size: int = 8, batches_per_call: int = 4):
        if batch_size < 1:
            raise ValueError(f"`batch_size` (={batch_size}) must be >= 1")
        self.pool, self.batch_size = pool, int(batch_size)
        self.temperature, self.chat = pool.temperature, pool.chat
        self._rows = self.batch_size * max(1, int(batches_per_call))

    def token_logprobs(self, prompts: Sequence[Any], completions: Sequence[Sequence[int]],
                       alphas: Sequence[float] = (0.0, 1.0), proposals: Sequence[Any] = ()) -> list[np.ndarray]:
        """Per-token log-probabilities: one array (L_i, len(alphas) + len(proposals)) per completion."""
        from ..rollout import Proposal

        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        keys = [Proposal.parse(p).key for p in proposals]
        alphas = [float(a) for a in alphas]
        parts = [(start, start + self._rows) for start in range(0, len(prompts), self._rows)]
        results: dict[int, list[np.ndarray]] = {}
        while len(results) < len(parts):  # a part lost with its worker is scored again on the new one
            pool = self.pool
            refs = {}
            for j, (a, b) in enumerate(parts):
                if j not in results:
                    slot = j % len(pool.actors)
                    actor = pool.actors[slot]
                    ref = actor.token_logprobs.remote(list(prompts[a:b]), [list(map(int, c)) for c in completions[a:b]],
                                                      alphas, keys, self.batch_size)
                    refs[ref] = (j, slot, actor)
            for ref, (j, slot, actor) in refs.items():
                try:
                    results[j] = pool._ray.get(ref)
                except pool._lost:
                    pool._replace(slot, actor)
                except pool._ray.exceptions.RayTaskError as e:
                    raise remote_cause(e) from None
        return [t for j in range(len(parts)) for t in results[j]]

    def score(self, prompts: Sequence[Any], completions: Sequence[Sequence[int]],
              alphas: Sequence[float] = (0.0, 1.0), proposals: Sequence[Any] = ()) -> np.ndarray:
        """Summed log q(y | x): shape (N, len(alphas) + len(proposals)), alphas first."""
        per_token = self.token_logprobs(prompts, completions, alphas, proposals)
        return np.stack([t.sum(0) for t in per_token]) if per_token else np.zeros((0, len(alphas) + len(proposals)))

    def score_rollouts(self, prompts_by_id: Mapping[str, Any], rollouts: Sequence[Any],
                       alphas: Sequence[float] = (), proposals: Sequence[Any] = ()) -> np.ndarray:
        """Summed log-probabilities of stored rollouts (see :meth:`score`)."""
        missing = sorted({r.prompt_id for r in rollouts} - set(prompts_by_id))
        if missing:
            raise KeyError(f"no prompt given for rollouts of prompt ids {missing[:5]}")
        return self.score([prompts_by_id[r.prompt_id] for r in rollouts], [r.token_ids for r in rollouts],
                          alphas, proposals)
