"""PathSampler: the one decoding loop of tailscope (METHODS.md §1).

Every rollout is drawn from a point of the logit path ``l_A + α (l_B − l_A)`` between a
reference model A and a target model B, both recomputed at every step with a KV cache each.

The loop, per batch of rows:

1. left-pad the batch's distinct prompts (per model: each applies its own chat template),
   prefill them once and expand each cache row to that prompt's rollouts;
2. at each step take both models' last-position logits (float32, common vocabulary prefix),
   log-softmax each, combine them into the proposal's per-token distribution;
3. draw the next token by inverse-CDF from a counter-based uniform keyed by
   (seed, proposal, prompt id, seed index, step) — a rollout is the same whatever batch it is in;
4. add the token's log-probability under the proposal, under A, under B and under the proposal
   moved to each α of a grid;
5. feed the token to both models; stop a row at EOS, a stop string or the token limit, and drop
   finished rows from the caches when half the batch is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ._kvcache import preallocate
from .models import ModelPair
from .path import NonFiniteLogitsError, Proposal, check_finite, path_logprobs, proposal_logprobs, truncate
from .prompts import Prompt

__all__ = ["NonFiniteLogitsError", "PathSampler", "Proposal", "Rollout", "SampleRequest"]

FinishReason = Literal["eos", "stop", "length"]
_FINISH: tuple[FinishReason, ...] = ("length", "eos", "stop")


@dataclass(frozen=True)
class Rollout:
    """One sampled completion and its exact log-probabilities (natural log, summed over tokens).

    ``logprob`` is under the distribution actually sampled from (the proposal, after any
    top-k/top-p truncation); ``logprob_reference`` and ``logprob_target`` are under q_0 and q_1
    (untruncated, at the sampling temperature); ``logprob_grid`` maps each requested α to log q
    under the proposal moved to α (:meth:`~tailscope.path.Proposal.moved`): log q_α itself for a
    pure path point; for a switching or mixture proposal, the same shape at α.
    The EOS token, when sampled, is part of ``token_ids`` and of every log-probability.
    """

    prompt_id: str
    proposal: str
    seed_index: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    logprob: float
    logprob_reference: float
    logprob_target: float
    logprob_grid: dict[float, float] = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        return Proposal.parse(self.proposal).alpha

    @property
    def log_weight(self) -> float:
        """log q_1(y) − log q_proposal(y): the importance weight toward the target."""
        return self.logprob_target - self.logprob

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["token_ids"] = list(self.token_ids)
        d["logprob_grid"] = {f"{a:.10g}": v for a, v in self.logprob_grid.items()}
        return d


@dataclass(frozen=True)
class SampleRequest:
    """One rollout to draw: which prompt, which seed index."""

    prompt: Prompt
    seed_index: int


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective hash of uint64 (wraps modulo 2**64)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def rollout_key(seed: int, proposal: Proposal, prompt_id: str, seed_index: int) -> int:
    """The 64-bit stream key of one rollout; its uniforms depend on nothing else."""
    digest = hashlib.blake2b(f"{seed}|{proposal.key}|{prompt_id}|{seed_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """53-bit uniforms in [0, 1), one per key, for one decoding step."""
    with np.errstate(over="ignore"):
        x = _mix64(keys + np.uint64(step + 1) * np.uint64(0x9E3779B97F4A7C15))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def encode_prompt(tokenizer, prompt: Prompt, chat: bool | None = None, *, which: str = "model") -> list[int]:
    """Token ids of a prompt: chat messages through the tokenizer's chat template; a text prompt
    through the template too when ``chat`` is true (None: when the tokenizer has a template), else raw."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    use_chat = chat if chat is not None else has_template
    if prompt.messages is not None or use_chat:
        if not has_template:
            raise ValueError(f"prompt {prompt.id!r} is a chat but the {which} tokenizer has no chat template")
        ids = tokenizer.apply_chat_template(prompt.chat(), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
    else:
        ids = tokenizer(prompt.text, add_special_tokens=True)["input_ids"]
    if not ids:
        raise ValueError(f"prompt {prompt.id!r} encodes to no tokens")
    return list(map(int, ids))


class PathSampler:
    """Batched sampling from a point (or proposal) of the logit path between two models.

    Args:
        pair: the reference (A, α = 0) and target (B, α = 1) models.
        temperature: softmax temperature T, applied after combining.
        max_new_tokens: reply length limit; a reply cut there has finish reason ``length``.
        top_k, top_p: optional truncation after combining. Reweighting estimators need full
            support, so leave these unset for them.
        stop: stop strings; the reply text is cut before the first one.
        batch_size: rows decoded together; bounds memory (two KV caches of this many rows).
        chat: apply the chat template to text prompts (None: when the tokenizer has one).
        seed: the run's seed; with the proposal, prompt id and seed index it fixes a rollout.
    """

    def __init__(
        self,
        pair: ModelPair,
        *,
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        batch_size: int = 64,
        chat: bool | None = None,
        seed: int = 0,
    ):
        if not temperature > 0:
            raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float")
        if max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` (={max_new_tokens}) must be >= 1")
        if top_k is not None and top_k < 1:
            raise ValueError(f"`top_k` (={top_k}) must be a positive integer")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"`top_p` (={top_p}) must be in (0, 1]")
        if batch_size < 1:
            raise ValueError(f"`batch_size` (={batch_size}) must be >= 1")
        self.pair = pair
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.top_k, self.top_p = top_k, top_p
        self.stop = tuple(s for s in stop if s)
        self.batch_size = int(batch_size)
        self.chat = chat
        self.seed = int(seed)
        self._eos = torch.tensor(sorted(pair.eos_token_ids), dtype=torch.long, device=pair.device)
        self._prompt_cache: dict[tuple[str, int], list[int]] = {}

    # ----------------------------------------------------------------- prompts
    def encode_prompt(self, prompt: Prompt, which: Literal["reference", "target"]) -> list[int]:
        """Token ids of a prompt for one model of the pair (its own chat template)."""
        cache_key = (prompt.content_hash, 0 if which == "reference" else 1)
        if cache_key not in self._prompt_cache:
            tok = (self.pair.reference if which == "reference" else self.pair.target).tokenizer
            self._prompt_cache[cache_key] = encode_prompt(tok, prompt, self.chat, which=which)
        return self._prompt_cache[cache_key]

    def scorer(self, batch_size: int = 8):
        """A teacher-forced :class:`~tailscope.scoring.Scorer` with this sampler's pair, temperature and prompt encoding."""
        from .scoring import Scorer

        return Scorer(self.pair, temperature=self.temperature, chat=self.chat, batch_size=batch_size)

    # --------------------------------------------------------------- sampling
    def sample(
        self,
        prompts: Sequence[Prompt],
        n: int,
        proposal: Proposal | float | str = 1.0,
        *,
        logprob_grid: Sequence[float] = (),
        seed_offset: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> list[Rollout]:
        """Draw ``n`` rollouts per prompt (seed indices ``seed_offset .. seed_offset + n − 1``)."""
        requests = [SampleRequest(p, seed_offset + i) for p in prompts for i in range(n)]
        return self.sample_requests(requests, proposal, logprob_grid=logprob_grid, progress=progress)

    def sample_requests(
        self,
        requests: Sequence[SampleRequest],
        proposal: Proposal | float | str = 1.0,
        *,
        logprob_grid: Sequence[float] = (),
        progress: Callable[[int], None] | None = None,
    ) -> list[Rollout]:
        """Draw exactly the requested (prompt, seed index) rollouts, in request order."""
        return [r for batch in self.iter_batches(requests, proposal, logprob_grid=logprob_grid, progress=progress)
                for r in batch]

    def iter_batches(
        self,
        requests: Sequence[SampleRequest],
        proposal: Proposal | float | str = 1.0,
        *,
        logprob_grid: Sequence[float] = (),
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[list[Rollout]]:
        """Yield rollouts a batch at a time (so a caller can store each batch as it lands)."""
        proposal = Proposal.parse(proposal)
        grid = tuple(float(a) for a in logprob_grid)
        for start in range(0, len(requests), self.batch_size):
            chunk = list(requests[start : start + self.batch_size])
            batch = self._sample_batch(chunk, proposal, grid)
            if progress is not None:
                progress(len(batch))
            yield batch

    def _prefill(self, which: Literal["reference", "target"], prompts: list[Prompt], rows: torch.Tensor):
        """Prefill each distinct prompt once (left-padded), then expand cache rows to the rollouts."""
        lm = self.pair.reference if which == "reference" else self.pair.target
        seqs = [self.encode_prompt(p, which) for p in prompts]
        width = max(map(len, seqs))
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        device = self.pair.device
        ids = torch.full((len(seqs), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, device=device)
            mask[i, width - len(s):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = out.past_key_values
        if len(seqs) > 1 or rows.numel() > 1:
            cache.batch_select_indices(rows)
        preallocate(cache, self.max_new_tokens)
        logits = out.logits[:, -1, : self.pair.vocab_size].float()[rows]
        return cache, mask[rows], positions[rows, -1], logits

    @torch.no_grad()
    def _sample_batch(self, chunk: list[SampleRequest], proposal: Proposal, grid: tuple[float, ...]) -> list[Rollout]:
        device, T = self.pair.device, self.temperature
        distinct: dict[str, int] = {}
        for r in chunk:
            distinct.setdefault(r.prompt.content_hash, len(distinct))
        prompts = list({r.prompt.content_hash: r.prompt for r in chunk}.values())
        rows = torch.tensor([distinct[r.prompt.content_hash] for r in chunk], device=device)
        cache_a, mask_a, pos_a, logits_a = self._prefill("reference", prompts, rows)
        cache_b, mask_b, pos_b, logits_b = self._prefill("target", prompts, rows)

        n = len(chunk)
        keys = np.array([rollout_key(self.seed, proposal, r.prompt.id, r.seed_index) for r in chunk], dtype=np.uint64)
        tokens = torch.full((n, self.max_new_tokens), -1, dtype=torch.long, device=device)
        length = torch.zeros(n, dtype=torch.long, device=device)
        finish = torch.zeros(n, dtype=torch.long, device=device)  # index into _FINISH
        lp = torch.zeros(n, dtype=torch.float64, device=device)
        lp_a, lp_b = torch.zeros_like(lp), torch.zeros_like(lp)
        lp_grid = torch.zeros((n, len(grid)), dtype=torch.float64, device=device)
        grid_proposals = [proposal.moved(beta) for beta in grid]  # the proposal's shape at each grid α
        live = torch.arange(n, device=device)  # cache row -> chunk index, for rows still in the caches
        live_host = np.arange(n)  # the same, on the host, for the uniforms (changes only when rows are dropped)
        active = torch.ones(n, dtype=torch.bool, device=device)  # per cache row

        for step in range(self.max_new_tokens):
            log_a = torch.log_softmax(logits_a, dim=-1)  # (rows, V)
            log_b = torch.log_softmax(logits_b, dim=-1)
            q_a = path_logprobs(log_a, log_b, 0.0, T)
            q_b = path_logprobs(log_a, log_b, 1.0, T)
            q = proposal_logprobs(log_a, log_b, proposal, step, T, target=q_b)
            self._check(q, logits_a, logits_b, proposal, step)
            q = truncate(q, self.top_k, self.top_p)

            # inverse-CDF draw in float64 so tokens of probability ~1e-12 keep their exact chance
            u = torch.from_numpy(uniforms(keys[live_host], step)).to(device)
            cdf = q.double().exp().cumsum(-1)
            nxt = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
            nxt = nxt.clamp_(max=q.shape[-1] - 1)
            pick = nxt.unsqueeze(-1)

            idx = live[active]
            lp[idx] += q.gather(-1, pick).squeeze(-1)[active].double()
            lp_a[idx] += q_a.gather(-1, pick).squeeze(-1)[active].double()
            lp_b[idx] += q_b.gather(-1, pick).squeeze(-1)[active].double()
            for j, moved in enumerate(grid_proposals):
                col = proposal_logprobs(log_a, log_b, moved, step, T, target=q_b).gather(-1, pick).squeeze(-1)
                lp_grid[idx, j] += col[active].double()

            tokens[idx, step] = nxt[active]
            length[idx] += 1
            ended = torch.isin(nxt, self._eos) & active
            finish[live[ended]] = 1
            active &= ~ended
            if self.stop:  # stop strings need the text: decode the tail of each live row
                for row in active.nonzero().flatten().tolist():
                    i = int(live[row])
                    if self._hit_stop(tokens[i, : int(length[i])].tolist()):
                        finish[i] = 2
                        active[row] = False
            remaining = int(active.sum())
            if remaining == 0 or step == self.max_new_tokens - 1:
                break

            if remaining <= len(active) // 2:  # drop finished rows from both caches
                keep = active.nonzero().flatten()
                cache_a.batch_select_indices(keep)
                cache_b.batch_select_indices(keep)
                mask_a, mask_b, pos_a, pos_b = mask_a[keep], mask_b[keep], pos_a[keep], pos_b[keep]
                live, nxt, active = live[keep], nxt[keep], active[keep]
                live_host = live.cpu().numpy()

            feed = nxt.unsqueeze(-1)
            ones = torch.ones_like(feed)
            mask_a, mask_b = torch.cat([mask_a, ones], -1), torch.cat([mask_b, ones], -1)
            pos_a, pos_b = pos_a + 1, pos_b + 1
            logits_a = self._step(self.pair.reference.model, feed, mask_a, pos_a, cache_a)
            logits_b = self._step(self.pair.target.model, feed, mask_b, pos_b, cache_b)

        out = []
        tokens_host, length_host, finish_host = tokens.cpu().tolist(), length.cpu().tolist(), finish.cpu().tolist()
        for i, r in enumerate(chunk):
            toks, reason = tokens_host[i][: length_host[i]], _FINISH[finish_host[i]]
            out.append(Rollout(
                prompt_id=r.prompt.id, proposal=proposal.key, seed_index=r.seed_index,
                token_ids=tuple(toks), text=self._text(toks, reason), finish_reason=reason,
                logprob=float(lp[i]), logprob_reference=float(lp_a[i]), logprob_target=float(lp_b[i]),
                logprob_grid={beta: float(lp_grid[i, j]) for j, beta in enumerate(grid)},
            ))
        return out

    @staticmethod
    def _check(q, logits_a, logits_b, proposal: Proposal, step: int) -> None:
        """One finiteness check per step; on failure, say which model (if either) caused it."""
        try:
            check_finite(q, what="the proposal distribution", alpha=proposal.alpha, step=step)
        except NonFiniteLogitsError:
            for name, lg in (("reference", logits_a), ("target", logits_b)):
                if not bool(torch.isfinite(lg).all()):
                    raise NonFiniteLogitsError(
                        f"the {name} model produced non-finite logits at reply step {step} (proposal {proposal.key})"
                    ) from None
            raise

    def _step(self, model, feed, mask, pos, cache) -> torch.Tensor:
        out = model(input_ids=feed, attention_mask=mask, position_ids=pos.unsqueeze(-1),
                    past_key_values=cache, use_cache=True)
        return out.logits[:, -1, : self.pair.vocab_size].float()

    def _hit_stop(self, toks: list[int]) -> bool:
        tail = self.pair.tokenizer.decode(toks[-max(8, 2 * max(map(len, self.stop))):], skip_special_tokens=True)
        return any(s in tail for s in self.stop)

    def _text(self, toks: list[int], finish: FinishReason) -> str:
        text = self.pair.tokenizer.decode(toks, skip_special_tokens=True)
        if finish == "stop":
            cut = min((text.find(s) for s in self.stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        return text


def sample_path(pair: ModelPair, prompts: Sequence[Prompt], alpha: float, n: int, **kwargs) -> list[Rollout]:
    """Convenience: ``PathSampler(pair, **kwargs).sample(prompts, n, alpha)``."""
    return PathSampler(pair, **kwargs).sample(prompts, n, Proposal(alpha=alpha))

