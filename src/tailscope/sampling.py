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
5. feed the token to both models (past a switching proposal's switch, to the target alone: every
   density the rollout records is the target's there, so the reference is not run); stop a row at EOS, a stop string or the token limit, and drop
   finished rows from the caches when half the batch is done.

With ``batch_size="auto"`` the batch size comes from free device memory, and a batch that runs out
of memory is drawn again in halves (:mod:`tailscope.batching`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ._kvcache import compile_failed, compiled_forward, forward_step, output_cache, preallocate
from .batching import OutOfMemoryAtOneRowError, auto_batch_size, check_memory_limit, is_out_of_memory
from .models import LoadedModel, ModelPair
from .path import NonFiniteLogitsError, check_finite, path_logprobs, proposal_logprobs, truncate
from .prompts import Prompt
from .rollout import FinishReason, Proposal, Rollout, SampleRequest, encode_prompt, rollout_key, uniforms

__all__ = ["NonFiniteLogitsError", "PathSampler", "Proposal", "Rollout", "SampleRequest", "StepView", "model_fingerprint"]

_FINISH: tuple[FinishReason, ...] = ("length", "eos", "stop")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepView:
    """What one decoding step produced, for an ``on_step`` hook (streaming, live log-probabilities).

    ``rows`` are the batch's request indices that drew a token at this step, ``tokens`` their
    tokens, ``log_q`` the distribution each was drawn from, shape (len(rows), V). Read-only: the
    loop reuses nothing from it, and a hook must not modify the tensors.

    A hook may return request indices (of ``rows``) to end after this step's token, with finish
    reason ``stop``: a server ends each request at its own limit or stop string inside one batch.
    """

    step: int
    rows: list[int]
    tokens: torch.Tensor
    log_q: torch.Tensor


def model_fingerprint(model: Any) -> str:
    """Identity of a model's weights: every parameter's name, shape and first values."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            if p.device.type != "meta":  # offloaded weights have no values at hand; their shapes still count
                h.update(p.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class _ModelState:
    """One model's side of the loop for the rows still decoding: its KV cache, attention mask and
    next positions. ``prefill`` starts it from left-padded prompts, ``step`` feeds one token per row
    and returns the next logits, ``keep`` drops finished rows."""

    def __init__(self, lm: LoadedModel, vocab: int, cache: Any, mask: torch.Tensor, positions: torch.Tensor,
                 forward: Callable[..., Any] | None = None):
        self.lm, self.vocab, self.cache, self.mask, self.positions = lm, vocab, cache, mask, positions
        self.forward = forward  # the decode steps' call (compiled), None for the model's own

    @classmethod
    def prefill(cls, lm: LoadedModel, seqs: list[list[int]], rows: torch.Tensor, vocab: int, room: int,
                device: torch.device, forward: Callable[..., Any] | None = None) -> tuple[_ModelState, torch.Tensor]:
        """Prefill each distinct prompt once (left-padded), then expand cache rows to the rollouts.

        Returns the state and the first logits, float32 over the common vocabulary, (rows, V)."""
        width = max(map(len, seqs))
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, device=device)
            mask[i, width - len(s):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = forward_step(lm.model, ids, mask, positions)
        cache = output_cache(out)
        if len(seqs) > 1 or rows.numel() > 1:
            cache.batch_select_indices(rows)
        preallocate(cache, room)
        logits = out.logits[:, -1, :vocab].float()[rows]
        return cls(lm, vocab, cache, mask[rows], positions[rows, -1], forward), logits

    def step(self, feed: torch.Tensor) -> torch.Tensor:
        """Feed one token per row, (rows,); the next logits, (rows, V)."""
        self.mask = torch.cat([self.mask, torch.ones_like(feed).unsqueeze(-1)], -1)
        self.positions = self.positions + 1
        out = forward_step(self.lm.model, feed.unsqueeze(-1), self.mask, self.positions.unsqueeze(-1), self.cache,
                           forward=self.forward)
        return out.logits[:, -1, : self.vocab].float()

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (indices into the current rows)."""
        self.cache.batch_select_indices(rows)
        self.mask, self.positions = self.mask[rows], self.positions[rows]


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
            ``"auto"``: from the device's free memory, halved and the batch drawn again whenever
            it runs out of memory (:mod:`tailscope.batching`); the rollouts are those of a
            fixed batch of the size it settles at.
        chat: apply the chat template to text prompts (None: when the tokenizer has one).
        seed: the run's seed; with the proposal, prompt id and seed index it fixes a rollout.
        memory_limit: bytes a batch's KV caches may take (None: what the device has); a batch that
            needs more raises ``torch.OutOfMemoryError`` as a full device would.
        compile: ``torch.compile`` both models' decode steps (opt-in: the first batch compiles,
            minutes on a CPU; see docs/benchmarks.md for when it pays). Rollouts agree with eager
            decoding to float rounding.
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
        batch_size: int | Literal["auto"] = 64,
        chat: bool | None = None,
        seed: int = 0,
        memory_limit: int | None = None,
        compile: bool = False,
    ):
        if not temperature > 0:
            raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float")
        if max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` (={max_new_tokens}) must be >= 1")
        if top_k is not None and top_k < 1:
            raise ValueError(f"`top_k` (={top_k}) must be a positive integer")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"`top_p` (={top_p}) must be in (0, 1]")
        self.auto_batch = batch_size == "auto"
        if not self.auto_batch and (isinstance(batch_size, str) or batch_size < 1):
            raise ValueError(f"`batch_size` (={batch_size!r}) must be a whole number >= 1 or 'auto'")
        if memory_limit is not None and memory_limit < 1:
            raise ValueError(f"`memory_limit` (={memory_limit}) must be a positive number of bytes")
        self.pair = pair
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.top_k, self.top_p = top_k, top_p
        self.stop = tuple(s for s in stop if s)
        self.batch_size = auto_batch_size(pair, self.max_new_tokens) if self.auto_batch else int(batch_size)
        self.memory_limit = memory_limit
        self.compile = bool(compile)
        self._forwards = {which: compiled_forward(lm.model) if compile else None
                          for which, lm in (("reference", pair.reference), ("target", pair.target))}
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

    def settings(self) -> dict[str, Any]:
        """What fixes this sampler's rollouts: both models (name, hub revision if any, and a fingerprint
        of the weights), the shared vocabulary and the sampling settings. A run store records it and
        checks it."""
        pair = self.pair
        vocab = json.dumps(sorted(pair.tokenizer.get_vocab().items()))

        def model(lm: LoadedModel) -> dict[str, Any]:
            revision = {"revision": lm.revision} if lm.revision is not None else {}
            return {"name": lm.name, **revision, "weights": model_fingerprint(lm.model)}

        return {
            "models": {
                "reference": model(pair.reference),
                "target": model(pair.target),
                "vocab_size": int(pair.vocab_size),
                "tokenizer": hashlib.sha256(vocab.encode()).hexdigest()[:16],
            },
            "sampling": {
                "temperature": self.temperature, "max_new_tokens": self.max_new_tokens,
                "top_k": self.top_k, "top_p": self.top_p, "stop": list(self.stop),
                "seed": self.seed, "chat": self.chat,
            },
        }

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
        requests: Iterable[SampleRequest],
        proposal: Proposal | float | str = 1.0,
        *,
        logprob_grid: Sequence[float] = (),
        progress: Callable[[int], None] | None = None,
        on_step: Callable[[StepView], Iterable[int] | None] | None = None,
    ) -> Iterator[list[Rollout]]:
        """Yield rollouts a batch at a time (so a caller can store each batch as it lands).

        ``requests`` may be any iterable; it is read one batch ahead, so a long stream of requests
        never sits in memory. ``on_step`` sees every decoding step (:class:`StepView`).

        With ``batch_size="auto"``, a batch that runs out of memory yields nothing: the batch size
        is halved (for the rest of this sampler's life) and the same requests drawn again.
        """
        proposal = Proposal.parse(proposal)
        grid = tuple(float(a) for a in logprob_grid)
        pending = iter(requests)
        queue: list[SampleRequest] = []  # requests read but not yet yielded
        while True:
            queue += itertools.islice(pending, max(0, self.batch_size - len(queue)))
            if not queue:
                return
            chunk = queue[: self.batch_size]
            batch = self._sample_fitting(chunk, proposal, grid, on_step)
            if batch is None:  # out of memory (the batch size was halved) or a failed compile: again
                continue
            del queue[: len(chunk)]
            if progress is not None:
                progress(len(batch))
            yield batch

    def _sample_fitting(self, chunk: list[SampleRequest], proposal: Proposal, grid: tuple[float, ...],
                        on_step: Callable[[StepView], Iterable[int] | None] | None) -> list[Rollout] | None:
        """The chunk's rollouts; None when it ran out of memory and ``batch_size`` was halved, or
        torch.compile failed (the models now decode eagerly): either way the chunk is drawn again.

        The failed batch's tensors go with its exception, before the device's cache is emptied."""
        try:
            return self._sample_batch(chunk, proposal, grid, on_step)
        except Exception as e:
            if self.compile and on_step is None and compile_failed(e):
                return None
            # a hook has seen the failed batch's steps (a server streamed them): they cannot be taken back
            if not (self.auto_batch and on_step is None and is_out_of_memory(e)):
                raise
            if len(chunk) == 1:
                raise OutOfMemoryAtOneRowError(
                    f"out of memory on {self.pair.device} with a batch of one row (prompt "
                    f"{chunk[0].prompt.id!r}, up to {self.max_new_tokens} new tokens): give a smaller "
                    "--max-new-tokens, a smaller --dtype, or spread the models over more devices") from e
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        self.batch_size = len(chunk) // 2
        _log.warning("out of memory with %d rows (%s); drawing the same rollouts again %d at a time",
                     len(chunk), reason, self.batch_size)
        if self.pair.device.type == "cuda":
            torch.cuda.empty_cache()
        return None

    def _start(self, which: Literal["reference", "target"], prompts: list[Prompt], rows: torch.Tensor):
        lm = self.pair.reference if which == "reference" else self.pair.target
        seqs = [self.encode_prompt(p, which) for p in prompts]
        return _ModelState.prefill(lm, seqs, rows, self.pair.vocab_size, self.max_new_tokens, self.pair.device,
                                   self._forwards[which])

    @torch.no_grad()
    def _sample_batch(self, chunk: list[SampleRequest], proposal: Proposal, grid: tuple[float, ...],
                      on_step: Callable[[StepView], Iterable[int] | None] | None = None) -> list[Rollout]:
        device, T = self.pair.device, self.temperature
        distinct: dict[str, int] = {}
        for r in chunk:
            distinct.setdefault(r.prompt.content_hash, len(distinct))
        prompts = list({r.prompt.content_hash: r.prompt for r in chunk}.values())
        rows = torch.tensor([distinct[r.prompt.content_hash] for r in chunk], device=device)
        ref, logits_a = self._start("reference", prompts, rows) if proposal.switch_after != 0 else (None, None)
        tgt, logits_b = self._start("target", prompts, rows)
        if self.memory_limit is not None:  # both caches hold room for the whole reply by now
            check_memory_limit([s.cache for s in (ref, tgt) if s is not None], self.memory_limit, len(chunk))

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

        # past a switch every token is the target's, under the proposal and every grid proposal alike:
        # the reference is dropped there, and its log-probability of the reply stays unknown (NaN)
        switch = proposal.switch_after
        for step in range(self.max_new_tokens):
            # both models' next-token log-probabilities, and the proposal's: (rows, V) each
            log_b = torch.log_softmax(logits_b, dim=-1)
            if ref is None:
                q_b = path_logprobs(log_b, log_b, 1.0, T)
                q = q_a = q_b
            else:
                log_a = torch.log_softmax(logits_a, dim=-1)
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

            # add the drawn token's log-probability under the proposal, A, B and each grid proposal
            idx = live[active]
            lp[idx] += q.gather(-1, pick).squeeze(-1)[active].double()
            lp_b[idx] += q_b.gather(-1, pick).squeeze(-1)[active].double()
            if ref is None:
                lp_a[idx] = torch.nan
                lp_grid[idx] += q_b.gather(-1, pick)[active].double()
            else:
                lp_a[idx] += q_a.gather(-1, pick).squeeze(-1)[active].double()
                for j, moved in enumerate(grid_proposals):
                    col = proposal_logprobs(log_a, log_b, moved, step, T, target=q_b).gather(-1, pick).squeeze(-1)
                    lp_grid[idx, j] += col[active].double()
            ended_by_hook = on_step(StepView(step, idx.tolist(), nxt[active], q[active])) if on_step else None

            # record the token; stop rows at EOS or a stop string
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
            if ended_by_hook:
                hook_ends = torch.zeros(n, dtype=torch.bool, device=device)
                hook_ends[list(ended_by_hook)] = True
                hit = hook_ends[live] & active
                finish[live[hit]] = 2
                active &= ~hit
            remaining = int(active.sum())
            if remaining == 0 or step == self.max_new_tokens - 1:
                break

            if remaining <= len(active) // 2:  # drop finished rows from both caches
                keep = active.nonzero().flatten()
                if ref is not None:
                    ref.keep(keep)
                tgt.keep(keep)
                live, nxt, active = live[keep], nxt[keep], active[keep]
                live_host = live.cpu().numpy()

            # feed the drawn token to both models (to the target alone once the next step is switched)
            if ref is not None and switch is not None and step + 1 >= switch:
                ref = logits_a = None  # frees the reference's cache for the rest of the batch
            if ref is not None:
                logits_a = ref.step(nxt)
            logits_b = tgt.step(nxt)

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
                if lg is not None and not bool(torch.isfinite(lg).all()):
                    raise NonFiniteLogitsError(
                        f"the {name} model produced non-finite logits at reply step {step} (proposal {proposal.key})"
                    ) from None
            raise

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

