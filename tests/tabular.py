"""An exactly solvable logit path for statistical tests of the estimators.

Two "models" given as tables of next-token logits that depend on the step and the previous token
(V tokens, replies of L tokens). Sampling follows the library's own path arithmetic
(:func:`tailscope.path.proposal_logprobs`) and its counter-based uniforms, so a rollout depends
only on (seed, proposal, prompt, seed index); the behaviour's exact rate at any α comes from
enumerating all V**L replies.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from tailscope.estimators import Observation
from tailscope.path import Proposal, path_logprobs, proposal_logprobs
from tailscope.prompts import Prompt
from tailscope.sampling import Rollout, rollout_key, uniforms


class TabularPath:
    """Behaviour: the reply starts with ``bad`` tokens in a row (token 0). The target pushes token 0 down by ``shift`` nats."""

    def __init__(self, vocab: int = 5, length: int = 4, shift: float = 2.5, bad: int = 2, seed: int = 0,
                 drift: float = 0.5):
        g = np.random.default_rng(seed)
        self.V, self.L, self.bad = vocab, length, bad
        la = g.normal(0, 1, (length, vocab + 1, vocab))  # row `vocab` is "no previous token"
        la[:, :, 0] += 0.8
        lb = la + g.normal(0, drift, la.shape)  # the target differs at every token, not only the deciding ones
        lb[:, :, 0] -= shift
        self.log_a = torch.log_softmax(torch.tensor(la), -1)
        self.log_b = torch.log_softmax(torch.tensor(lb), -1)

    def flagged(self, tokens: Sequence[int]) -> bool:
        return all(t == 0 for t in tokens[: self.bad])

    def _step_logs(self, prev: np.ndarray, step: int):
        return self.log_a[step, prev], self.log_b[step, prev]

    def exact_rate(self, alpha: float) -> float:
        total = 0.0
        for ys in itertools.product(range(self.V), repeat=self.bad):
            prev, lp = self.V, 0.0
            for t, y in enumerate(ys):
                lq = path_logprobs(self.log_a[t, prev], self.log_b[t, prev], alpha)
                lp += float(lq[y])
                prev = y
            if self.flagged(ys):
                total += np.exp(lp)
        return total

    def sample(self, prompt_id: str, proposal: Proposal, seeds: Sequence[int], grid: Sequence[float], seed: int):
        keys = np.array([rollout_key(seed, proposal, prompt_id, i) for i in seeds], dtype=np.uint64)
        n = len(seeds)
        prev = np.full(n, self.V)
        toks = np.zeros((n, self.L), dtype=int)
        lp = np.zeros(n)
        lp_t = np.zeros(n)
        lp_g = np.zeros((n, len(grid)))
        for t in range(self.L):
            la, lb = self._step_logs(prev, t)
            q = proposal_logprobs(la, lb, proposal, t)
            cdf = q.exp().cumsum(-1)
            u = torch.tensor(uniforms(keys, t)).unsqueeze(-1)
            y = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp(max=self.V - 1).squeeze(-1)
            pick = y.unsqueeze(-1)
            lp += q.gather(-1, pick).squeeze(-1).numpy()
            lp_t += path_logprobs(la, lb, 1.0).gather(-1, pick).squeeze(-1).numpy()
            for j, beta in enumerate(grid):
                lp_g[:, j] += proposal_logprobs(la, lb, proposal.moved(beta), t).gather(-1, pick).squeeze(-1).numpy()
            toks[:, t] = y.numpy()
            prev = y.numpy()
        return [Rollout(prompt_id, proposal.key, int(s), tuple(map(int, toks[i])), "", "length", float(lp[i]),
                        float("nan"), float(lp_t[i]), {b: float(lp_g[i, j]) for j, b in enumerate(grid)})
                for i, s in enumerate(seeds)]


class TabularSource:
    """A RolloutSource over a TabularPath; ``seed`` makes independent repetitions."""

    def __init__(self, path: TabularPath, seed: int = 0):
        self.path, self.seed = path, seed
        self.drawn: dict[str, int] = {}
        self._cache: dict[tuple, list[Observation]] = {}

    def draw(self, prompt: Prompt, proposal: Proposal, n: int, grid: Sequence[float] = ()) -> list[Observation]:
        proposal = Proposal.parse(proposal)
        have = self._cache.setdefault((prompt.id, proposal.key, tuple(grid)), [])
        if len(have) < n:
            new = self.path.sample(prompt.id, proposal, range(len(have), n), tuple(grid), self.seed)
            have.extend(Observation(r, self.path.flagged(r.token_ids)) for r in new)
        self.drawn[proposal.key] = max(self.drawn.get(proposal.key, 0), n)
        return have[:n]


class TabularScorer:
    """Teacher-forced per-token log q_α of replies on a TabularPath (the Scorer's interface)."""

    def __init__(self, path: TabularPath):
        self.path = path

    def token_logprobs(self, prompts, completions, alphas=(0.0, 1.0), proposals=()):
        out = []
        for tokens in completions:
            prev, rows = self.path.V, []
            for t, y in enumerate(tokens):
                la, lb = self.path.log_a[t, prev], self.path.log_b[t, prev]
                rows.append([float(path_logprobs(la, lb, float(a))[y]) for a in alphas])
                prev = y
            out.append(np.array(rows))
        return out
