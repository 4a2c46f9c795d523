"""Teacher-forced scoring: log q_α(y | x) of given completions, for any α grid or proposal (METHODS.md §1).

It recomputes, with one full forward pass per model, exactly what :class:`~tailscope.sampling.PathSampler`
records during sampling (same prompt encoding, same per-step arithmetic in :mod:`tailscope.path`).
Scores are of the untruncated distributions: top-k/top-p are not applied here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .models import ModelPair
from .path import Proposal, path_logprobs, proposal_logprobs
from .prompts import Prompt
from .rollout import Rollout, encode_prompt

__all__ = ["Scorer"]


class Scorer:
    """Teacher-forced log-probabilities of completions on the logit path of a pair.

    Args:
        pair: the reference (α = 0) and target (α = 1) models.
        temperature: the softmax temperature the completions were sampled at.
        chat: prompt encoding, as for the sampler (None: chat template when the tokenizer has one).
        batch_size: sequences per forward pass (memory grows with batch × length × vocabulary).
    """

    def __init__(self, pair: ModelPair, *, temperature: float = 1.0, chat: bool | None = None, batch_size: int = 8):
        if not temperature > 0:
            raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float")
        if batch_size < 1:
            raise ValueError(f"`batch_size` (={batch_size}) must be >= 1")
        self.pair, self.temperature, self.chat, self.batch_size = pair, float(temperature), chat, int(batch_size)

    def _log_softmax_over_completion(self, which: str, prompts: Sequence[Prompt], completions: Sequence[Sequence[int]]):
        """Per model: log_softmax of the logits that predict each completion token, shape (B, L_max, V)."""
        lm = self.pair.reference if which == "reference" else self.pair.target
        seqs = [encode_prompt(lm.tokenizer, p, self.chat, which=which) for p in prompts]
        full = [s + list(map(int, c)) for s, c in zip(seqs, completions)]
        width = max(map(len, full))
        device = self.pair.device
        ids = torch.zeros((len(full), width), dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(full):  # right padding: later pads cannot change earlier positions
            ids[i, : len(f)] = torch.tensor(f, device=device)
            mask[i, : len(f)] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        lmax = max((len(c) for c in completions), default=0)
        out = torch.zeros((len(full), lmax, self.pair.vocab_size), device=device)
        for i, (s, c) in enumerate(zip(seqs, completions)):
            if len(c):
                out[i, : len(c)] = logits[i, len(s) - 1 : len(s) - 1 + len(c), : self.pair.vocab_size].float()
        return torch.log_softmax(out, dim=-1)

    @torch.no_grad()
    def token_logprobs(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[Sequence[int]],
        alphas: Sequence[float] = (0.0, 1.0),
        proposals: Sequence[Proposal | str] = (),
    ) -> list[np.ndarray]:
        """Per-token log-probabilities: one array (L_i, len(alphas) + len(proposals)) per completion."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        props = [Proposal.parse(p) for p in proposals]
        V = self.pair.vocab_size
        for c in completions:
            bad = [t for t in c if not 0 <= int(t) < V]
            if bad:
                raise ValueError(f"completion holds token ids outside the vocabulary of {V}: {bad[:5]}")
        out: list[np.ndarray] = []
        T = self.temperature
        for start in range(0, len(prompts), self.batch_size):
            ps, cs = prompts[start : start + self.batch_size], completions[start : start + self.batch_size]
            log_a = self._log_softmax_over_completion("reference", ps, cs)
            log_b = self._log_softmax_over_completion("target", ps, cs)
            L = log_a.shape[1]
            if L == 0:
                out.extend(np.zeros((0, len(alphas) + len(props))) for _ in cs)
                continue
            picks = torch.zeros((len(cs), L, 1), dtype=torch.long, device=log_a.device)
            for i, c in enumerate(cs):
                if len(c):
                    picks[i, : len(c), 0] = torch.tensor(list(map(int, c)), device=log_a.device)
            cols = [path_logprobs(log_a, log_b, float(a), T).gather(-1, picks).squeeze(-1) for a in alphas]
            if props:
                q_one = path_logprobs(log_a, log_b, 1.0, T)
                for prop in props:
                    per_step = [proposal_logprobs(log_a[:, j], log_b[:, j], prop, j, T, target=q_one[:, j])
                                for j in range(L)]
                    cols.append(torch.stack(per_step, 1).gather(-1, picks).squeeze(-1))
            table = torch.stack(cols, -1).double().cpu().numpy()  # (B, L, columns)
            out.extend(table[i, : len(c)] for i, c in enumerate(cs))
        return out

    def score(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[Sequence[int]],
        alphas: Sequence[float] = (0.0, 1.0),
        proposals: Sequence[Proposal | str] = (),
    ) -> np.ndarray:
        """Summed log q(y | x): shape (N, len(alphas) + len(proposals)), alphas first."""
        per_token = self.token_logprobs(prompts, completions, alphas, proposals)
        return np.stack([t.sum(0) for t in per_token]) if per_token else np.zeros((0, len(alphas) + len(proposals)))

    def score_rollouts(
        self,
        prompts_by_id: Mapping[str, Prompt],
        rollouts: Sequence[Rollout],
        alphas: Sequence[float] = (),
        proposals: Sequence[Proposal | str] = (),
    ) -> np.ndarray:
        """Summed log-probabilities of stored rollouts (see :meth:`score`)."""
        missing = sorted({r.prompt_id for r in rollouts} - set(prompts_by_id))
        if missing:
            raise KeyError(f"no prompt given for rollouts of prompt ids {missing[:5]}")
        return self.score([prompts_by_id[r.prompt_id] for r in rollouts], [r.token_ids for r in rollouts],
                          alphas, proposals)
