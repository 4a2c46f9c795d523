"""Hybrid decoding: the path-mixed opening in our loop, the target-only tail on an engine.

For a switching proposal (METHODS.md §2) the first N reply tokens come from the mix and need both
models; every later token is the target's. So the loop draws the opening (its tokens, and their
log-probabilities under the proposal, A, B and every grid proposal, exactly as it always does),
and the engine continues each unfinished opening from the target. Every density a switched
rollout records is then ``opening + tail``, with the same tail sum in each (under ``moved(β)`` the
tail is the target's for every β): the tail cancels from every importance weight, so the weights
are exactly our loop's. The engine's numbers enter nowhere else.

Rollouts at an endpoint (α = 1 pure, the naive rollouts; α = 0 pure from a reference engine, the
endpoint IS proposal) are sampled whole on the engine and scored by our own batched
teacher-forced prefill of both models (:class:`~tailscope.scoring.Scorer`), so their densities are
our arithmetic too. Every other proposal needs the mix on every token and stays in our loop.

Engine rollouts are recorded as sampled (engines do not reproduce a draw from a seed); the run
store never samples a stored (prompt, proposal, seed index) again, so a rerun resumes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..prompts import Prompt
from ..rollout import Proposal, Rollout, SampleRequest
from ..sampling import PathSampler
from ._base import Continuation, Engine, pure_sampling
from ._identity import check_identity

__all__ = ["HybridSampler", "engine_route"]


def engine_route(proposal: Proposal, *, reference_engine: bool = False) -> str:
    """Where a proposal's rollouts are decoded: ``loop`` (the mix on every token), ``tail`` (the mixed
    opening in the loop, the rest on the target's engine), ``target`` or ``reference`` (whole on that engine)."""
    if proposal.is_pure and proposal.alpha == 1.0:
        return "target"
    if proposal.is_pure and proposal.alpha == 0.0 and reference_engine:
        return "reference"
    if proposal.switch_after is not None:
        return "tail" if proposal.switch_after > 0 else "target"
    return "loop"


class HybridSampler:
    """A :class:`~tailscope.sampling.PathSampler` whose target-only tokens are decoded by an engine.

    It has the wrapped sampler's settings (a run store sees the same sampler config) and its
    ``iter_batches``/``sample`` API. Before the first engine rollout the engine's identity is
    checked against our copy of the model (:func:`~tailscope.engines.check_identity`); the report is
    ``identity``. The wrapped sampler must sample the full distribution (no top-k/top-p).

    Args:
        sampler: our loop, with the pair, temperature, length limit, seed and prompt encoding.
        engine: serves the target.
        reference_engine: optionally serves the reference (for rollouts drawn from α = 0 alone).
        tolerance: the identity check's largest per-token log-probability gap (nats).
        check_prompts: prompts for the identity check (default: the first ones sampled).
        engine_batch: rows per engine request (at least the sampler's batch size). An engine decodes
            a large batch in about the time of a small one; our loop draws the openings of a
            request in its own batch size, and the next request's while the engine works.
    """

    def __init__(self, sampler: PathSampler, engine: Engine, *, reference_engine: Engine | None = None,
                 tolerance: float = 2e-3, check_prompts: Sequence[Prompt] = (), engine_batch: int = 256):
        if isinstance(sampler, HybridSampler):
            raise TypeError("wrap a PathSampler, not a HybridSampler")
        if sampler.top_k is not None or (sampler.top_p is not None and sampler.top_p < 1.0):
            raise ValueError("an engine samples the full distribution; use a sampler without top_k/top_p "
                             "(reweighting estimators need full support anyway)")
        self.sampler, self.engine, self.reference_engine = sampler, engine, reference_engine
        self.tolerance, self.check_prompts = float(tolerance), list(check_prompts)
        if engine_batch < 1:
            raise ValueError(f"`engine_batch` (={engine_batch}) must be >= 1")
        self.engine_batch = max(int(engine_batch), sampler.batch_size)
        self.identity: dict[str, Any] | None = None
        self.counts = {"loop": 0, "tail": 0, "target": 0, "reference": 0}

    def __getattr__(self, name: str) -> Any:  # the sampler's settings: pair, temperature, max_new_tokens, ...
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)

    # ------------------------------------------------------------------ config
    def engine_config(self) -> dict[str, Any]:
        """What a run records about its engines: kind, served model, the forced sampling settings."""
        eos = sorted(self.sampler.pair.eos_token_ids)
        out = {"target": self.engine.describe(), "sampling": pure_sampling(self.sampler.temperature, eos)}
        if self.reference_engine is not None:
            out["reference"] = self.reference_engine.describe()
        return out

    def route(self, proposal: Proposal | str | float) -> str:
        return engine_route(Proposal.parse(proposal), reference_engine=self.reference_engine is not None)

    def check(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        """Run the identity check on a few prompts (once); raises EngineIdentityError on a mismatch."""
        if self.identity is None:
            chosen = (self.check_prompts or list(prompts))[:3]
            pair, T = self.sampler.pair, self.sampler.temperature
            ids = [self.sampler.encode_prompt(p, "target") for p in chosen]
            # several URLs: each server is checked on its own (any one of them could serve another model)
            servers = self.engine.per_url() if len(getattr(self.engine, "urls", ())) > 1 else [self.engine]
            checks = [check_identity(e, pair.target, pair.vocab_size, ids, temperature=T, tolerance=self.tolerance,
                                     label="the target") for e in servers]
            for e in servers:
                if e is not self.engine:
                    e.close()
            worst = max(checks, key=lambda c: max(c["max_gap_scored"], c["max_gap_sampled"]))
            report = {"target": {**worst, "servers": len(checks)}}
            if self.reference_engine is not None:
                report["reference"] = check_identity(
                    self.reference_engine, pair.reference, pair.vocab_size,
                    [self.sampler.encode_prompt(p, "reference") for p in chosen],
                    temperature=T, tolerance=self.tolerance, label="the reference")
            self.identity = report
        return self.identity

    # ------------------------------------------------------------------ sampling
    def sample(self, prompts: Sequence[Prompt], n: int, proposal: Proposal | float | str = 1.0, *,
               logprob_grid: Sequence[float] = (), seed_offset: int = 0,
               progress: Callable[[int], None] | None = None) -> list[Rollout]:
        requests = [SampleRequest(p, seed_offset + i) for p in prompts for i in range(n)]
        return [r for b in self.iter_batches(requests, proposal, logprob_grid=logprob_grid, progress=progress)
                for r in b]

    def sample_requests(self, requests: Sequence[SampleRequest], proposal: Proposal | float | str = 1.0, *,
                        logprob_grid: Sequence[float] = (), progress: Callable[[int], None] | None = None
                        ) -> list[Rollout]:
        return [r for b in self.iter_batches(requests, proposal, logprob_grid=logprob_grid, progress=progress)
                for r in b]

    def iter_batches(self, requests: Iterable[SampleRequest], proposal: Proposal | float | str = 1.0, *,
                     logprob_grid: Sequence[float] = (), progress: Callable[[int], None] | None = None,
                     on_step: Any = None) -> Iterator[list[Rollout]]:
        """Yield rollouts a batch at a time, in request order. While the engine decodes one batch's
        tails, our loop draws the next batch's openings (the engine is another process)."""
        proposal = Proposal.parse(proposal)
        grid = tuple(float(a) for a in logprob_grid)
        route = self.route(proposal)
        if route == "loop" or (route == "tail" and proposal.switch_after >= self.sampler.max_new_tokens):
            self.counts["loop"] += 1
            yield from self.sampler.iter_batches(requests, proposal, logprob_grid=grid, progress=progress,
                                                 on_step=on_step)
            return
        if on_step is not None:
            raise ValueError("an on_step hook sees our loop's steps only; sample without an engine to use it")
        requests = list(requests)
        if not requests:
            return
        self.check([r.prompt for r in requests])
        self.counts[route] += len(requests)
        size = self.engine_batch
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future | None = None
            for chunk in chunks:
                started = self._start(chunk, proposal, grid, route, pool)
                if pending is not None:
                    batch = pending.result()
                    if progress is not None:
                        progress(len(batch))
                    yield batch
                pending = started
            if pending is not None:
                batch = pending.result()
                if progress is not None:
                    progress(len(batch))
                yield batch

    def _start(self, chunk: list[SampleRequest], proposal: Proposal, grid: tuple[float, ...], route: str,
               pool: ThreadPoolExecutor) -> Future:
        """Draw the chunk's openings now (our loop, this thread); return the engine's part as a future."""
        if route in ("target", "reference"):
            return pool.submit(self._whole, chunk, proposal, grid, route)
        opener = copy.copy(self.sampler)
        opener.max_new_tokens = proposal.switch_after
        openings = [r for batch in opener.iter_batches(chunk, proposal, logprob_grid=grid) for r in batch]
        return pool.submit(self._tails, chunk, openings)

    def _tails(self, chunk: list[SampleRequest], openings: list[Rollout]) -> list[Rollout]:
        s = self.sampler
        go_on = [i for i, r in enumerate(openings) if r.finish_reason == "length"]
        room = s.max_new_tokens - len(openings[go_on[0]].token_ids) if go_on else 0
        prefixes = [s.encode_prompt(chunk[i].prompt, "target") + list(openings[i].token_ids) for i in go_on]
        conts = dict(zip(go_on, self.engine.generate(prefixes, room, s.temperature))) if go_on else {}
        return [self._join(r, conts[i]) if i in conts else r for i, r in enumerate(openings)]

    def _join(self, opening: Rollout, cont: Continuation) -> Rollout:
        """The opening followed by the engine's tail; the tail's log-probability (the target's) is
        added to every recorded density, and the reference never saw it."""
        tokens, lps, reason = self._cut_at_stop(opening.token_ids, cont)
        tail = math.fsum(lps)
        return dataclasses.replace(
            opening, token_ids=tokens, text=self.sampler._text(list(tokens), reason), finish_reason=reason,
            logprob=opening.logprob + tail, logprob_target=opening.logprob_target + tail, logprob_reference=math.nan,
            logprob_grid={a: v + tail for a, v in opening.logprob_grid.items()})

    def _cut_at_stop(self, head: tuple[int, ...], cont: Continuation) -> tuple[tuple[int, ...], tuple[float, ...], str]:
        """Apply the sampler's stop strings to the tail as our loop would (the engine gets none: it
        would match them on its own text). Drawing past a stop and dropping the rest is the same
        distribution as stopping there."""
        reason = "eos" if cont.finish_reason == "eos" else "length"
        if not self.sampler.stop:
            return head + cont.token_ids, cont.logprobs, reason
        for k in range(1, len(cont.token_ids) + 1):
            if self.sampler._hit_stop(list(head + cont.token_ids[:k])):
                if k == len(cont.token_ids) and reason == "eos":
                    break  # the loop checks EOS first
                return head + cont.token_ids[:k], cont.logprobs[:k], "stop"
        return head + cont.token_ids, cont.logprobs, reason

    def _whole(self, chunk: list[SampleRequest], proposal: Proposal, grid: tuple[float, ...], route: str
               ) -> list[Rollout]:
        """Endpoint rollouts: tokens from the engine, every density from our teacher-forced prefill."""
        s = self.sampler
        engine = self.engine if route == "target" else self.reference_engine
        which = "target" if route == "target" else "reference"
        conts = engine.generate([s.encode_prompt(r.prompt, which) for r in chunk], s.max_new_tokens, s.temperature)
        cut = [self._cut_at_stop((), c) for c in conts]
        scores = s.scorer(batch_size=max(1, min(len(chunk), 16))).score(
            [r.prompt for r in chunk], [list(t) for t, _, _ in cut], alphas=(0.0, 1.0, *grid))
        out = []
        for r, (tokens, _, reason), row in zip(chunk, cut, scores):
            lp_a, lp_b = float(row[0]), float(row[1])
            out.append(Rollout(
                prompt_id=r.prompt.id, proposal=proposal.key, seed_index=r.seed_index, token_ids=tokens,
                text=s._text(list(tokens), reason), finish_reason=reason,  # type: ignore[arg-type]
                logprob=lp_b if route == "target" else lp_a, logprob_reference=lp_a, logprob_target=lp_b,
                logprob_grid={a: float(v) for a, v in zip(grid, row[2:])}))
        return out
