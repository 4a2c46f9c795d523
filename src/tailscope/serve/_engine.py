"""The serving engine: requests queue up, and those queued together decode as one batch of the one loop.

One worker thread owns the models. It takes the oldest waiting request, adds every other waiting
request of the same group (α, temperature, top-k, top-p: a batch has one proposal) while the rows
fit, and runs them through :meth:`PathSampler.iter_batches` with an ``on_step`` hook. The hook turns
each drawn token into the request's reply text and log-probabilities, ends a reply at its own
``max_tokens`` or stop string (so one batch serves requests with different limits), and hands each
reply back the moment it ends. Request threads and event loops never touch a model.

If a batch hits non-finite logits, each of its requests is rerun alone: the rollouts are keyed
by seed, so a rerun redraws the same tokens (the hook skips those already sent) and only the
request whose own prompt overflows fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import lru_cache

from ..models import ModelPair
from ..path import NonFiniteLogitsError
from ..rollout import Proposal, SampleRequest, encode_prompt
from ..sampling import PathSampler
from ._errors import ServeError
from ._jobs import Choice, ChoiceDone, Completion, GenerationSpec, JobDone, JobFailed, TokenEvent
from ._text import ReplyText

__all__ = ["Engine"]

log = logging.getLogger("tailscope.serve")
Event = TokenEvent | ChoiceDone | JobDone | JobFailed


def context_length(model) -> int | None:
    """The longest sequence a model's positions cover (None: no fixed limit in its config)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _Reply:
    """One choice of a request while it is being drawn."""

    def __init__(self, tokenizer, spec: GenerationSpec, eos: frozenset[int]):
        self.text = ReplyText(tokenizer, spec.stop)
        self.max_tokens, self.eos = spec.max_tokens, eos
        self.logprobs: list[float] = []
        self.tops: list[tuple[tuple[int, float], ...]] = []
        self.finish: str | None = None

    def add(self, token: int, logprob: float, top: tuple[tuple[int, float], ...]) -> str:
        """Record a drawn token; returns the text it releases. Sets ``finish`` when the reply ends."""
        self.logprobs.append(logprob)
        self.tops.append(top)
        piece, stopped = self.text.push(token)
        if stopped or token in self.eos:
            self.finish = "stop"
        elif len(self.text.tokens) >= self.max_tokens:
            self.finish = "length"
        return piece


class _Job:
    def __init__(self, spec: GenerationSpec, prompt_tokens: int, emit: Callable[[Event], None], engine: Engine):
        self.spec, self.prompt_tokens, self._emit = spec, prompt_tokens, emit
        self.replies = [_Reply(engine.pair.tokenizer, spec, engine.eos) for _ in range(spec.n)]
        self.cancelled = self.finished = False

    def emit(self, event: Event) -> None:
        try:
            self._emit(event)
        except RuntimeError:  # the client's event loop is gone: nobody is listening any more
            self.cancelled = True

    def fail(self, error: ServeError) -> None:
        if not self.finished:
            self.finished = True
            self.emit(JobFailed(error))

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """Serve one model pair: queue :class:`GenerationSpec` requests, decode them in shared batches.

    Args:
        pair: the reference (α = 0) and target (α = 1) models.
        name: the model id clients ask for.
        alpha: the path point a request gets when it names none.
        max_tokens: a request's reply limit when it sets none (capped by the context length).
        batch_size: rows (replies) decoded together at most.
        seed: the run seed of the counter-based stream; a request's own seed goes into its prompt id.
        linger: seconds the next batch may wait for the clients whose replies ended with the last
            batch to send their next requests (it starts as soon as they have); 0 never waits.
    """

    def __init__(self, pair: ModelPair, *, name: str, alpha: float = 1.0, max_tokens: int = 256,
                 batch_size: int = 32, seed: int = 0, linger: float = 0.25):
        if batch_size < 1:
            raise ValueError(f"`batch_size` (={batch_size}) must be >= 1")
        Proposal(alpha=alpha)  # checks α
        self.pair, self.name, self.alpha = pair, name, float(alpha)
        self.max_tokens, self.batch_size, self.seed = int(max_tokens), int(batch_size), int(seed)
        self.eos = frozenset(pair.eos_token_ids)
        limits = [c for c in (context_length(pair.reference.model), context_length(pair.target.model)) if c]
        self.context_length = min(limits) if limits else None
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.linger = float(linger)
        self._want = 0  # rows the next batch waits for (up to `linger`): those queued plus the clients about to return
        self.batches = 0  # batches decoded so far (for benchmarks and tests: how well requests shared)
        self.token_text = lru_cache(maxsize=None)(self._token_text)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Engine:
        if self._thread is None:
            self._closed = False
            self._thread = threading.Thread(target=self._work, name="tailscope-serve", daemon=True)
            self._thread.start()
        return self

    @property
    def waiting(self) -> int:
        """Requests queued and not yet in a batch."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def close(self) -> None:
        """Stop the worker once every queued request is done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def _checked(self, spec: GenerationSpec, fit: bool) -> tuple[GenerationSpec, int]:
        """The request as it will run, and its prompt's length (target encoding).

        Checks that the prompt and its reply fit both models' context; with ``fit`` (a reply limit
        the client did not set), the limit is lowered to what the context leaves instead."""
        try:
            lengths = [len(encode_prompt(lm.tokenizer, spec.prompt, False, which=which))
                       for which, lm in (("reference", self.pair.reference), ("target", self.pair.target))]
        except Exception as e:  # a chat template that rejects the messages, an empty prompt, ...
            raise ServeError(400, f"the prompt cannot be encoded: {e}", param="messages") from None
        if spec.n > self.batch_size:
            raise ServeError(400, f"`n` (={spec.n}) is more than the server decodes at once ({self.batch_size}); "
                             "ask for fewer choices or restart the server with a larger --batch-size", param="n")
        if self.context_length is not None:
            room = self.context_length - max(lengths)
            if fit and 1 <= room < spec.max_tokens:
                spec = replace(spec, max_tokens=room)
            if spec.max_tokens > room:
                raise ServeError(400, f"the prompt is {max(lengths)} tokens and max_tokens is {spec.max_tokens}, more "
                                 f"than the model's context of {self.context_length} tokens: shorten the prompt or "
                                 "lower max_tokens", code="context_length_exceeded", param="max_tokens")
        return spec, lengths[1]

    def submit(self, spec: GenerationSpec, emit: Callable[[Event], None], *, fit: bool = False) -> _Job:
        """Queue a request; ``emit`` is called from the worker thread with each event."""
        return self.submit_many([(spec, emit)], fit=fit)[0]

    def submit_many(self, requests: list[tuple[GenerationSpec, Callable[[Event], None]]], *,
                    fit: bool = False) -> list[_Job]:
        """Queue requests at once (so they share a batch where their groups allow); all or none are queued.

        ``fit``: the requests' reply limits are defaults, to be cut to what each prompt leaves of the context."""
        jobs = [_Job(*self._checked(spec, fit), emit, self) for spec, emit in requests]
        with self._cond:
            if self._closed and self._thread is not None:
                raise ServeError(503, "the server is shutting down", code="unavailable")
            self._queue.extend(jobs)
            self._cond.notify()
        self.start()  # a stopped engine starts again on its next request
        return jobs

    async def events(self, *specs: GenerationSpec, fit: bool = False) -> AsyncIterator[tuple[int, Event]]:
        """Queue the requests together; yield ``(k, event)`` for the k-th request as events happen.

        It ends when every request is done or failed; leaving the iteration early cancels them."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        jobs: list[_Job] = []
        try:
            jobs = self.submit_many([(spec, lambda ev, k=k: loop.call_soon_threadsafe(queue.put_nowait, (k, ev)))
                                     for k, spec in enumerate(specs)], fit=fit)
            open_jobs = len(jobs)
            while open_jobs:
                k, event = await queue.get()
                if isinstance(event, (JobDone, JobFailed)):
                    open_jobs -= 1
                yield k, event
        finally:
            for job in jobs:
                job.cancel()

    async def complete(self, spec: GenerationSpec, *, fit: bool = False) -> Completion:
        """Every reply of one request (raises :class:`ServeError` if it failed)."""
        result = Completion()
        async for _, event in self.events(spec, fit=fit):
            if isinstance(event, ChoiceDone):
                result.choices.append(event.choice)
            elif isinstance(event, JobFailed):
                raise event.error
            elif isinstance(event, JobDone):
                result.prompt_tokens = event.prompt_tokens
        result.choices.sort(key=lambda c: c.index)
        return result

    def _token_text(self, token_id: int) -> str:
        return self.pair.tokenizer.decode([token_id], skip_special_tokens=False)

    # ------------------------------------------------------------------ the worker
    def _take(self) -> list[_Job] | None:
        """Wait for requests; take the oldest and every waiting request that can share its batch."""
        with self._cond:
            while True:
                while self._queue and self._queue[0].cancelled:
                    self._queue.popleft()
                if self._queue:
                    break
                if self._closed:
                    return None
                self._cond.wait()
            self._gather()
            first = self._queue.popleft()
            jobs, rows, rest = [first], first.spec.n, deque()
            while self._queue:
                job = self._queue.popleft()
                if job.cancelled:
                    continue
                if job.spec.group == first.spec.group and rows + job.spec.n <= self.batch_size:
                    jobs.append(job)
                    rows += job.spec.n
                else:
                    rest.append(job)
            self._queue = rest
            return jobs

    def _gather(self) -> None:
        """Under load, wait briefly so the next batch is not a lone early request.

        When a batch ends, the clients of the replies that ended with it send their next requests a
        few milliseconds later; the requests that came in during the batch would otherwise start
        without them and make them wait a whole batch. Waits (lock released) until the rows queued
        reach those waiting when the batch ended plus one per such reply, or ``linger`` passes."""
        want = min(self.batch_size, self._want)
        deadline = time.monotonic() + self.linger
        while not self._closed and sum(j.spec.n for j in self._queue if not j.cancelled) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                self._decode(jobs)
            except NonFiniteLogitsError as e:
                if len(jobs) == 1:
                    spec = jobs[0].spec
                    jobs[0].fail(ServeError(400, f"α={spec.alpha:g} (temperature {spec.temperature:g}) gives "
                                            f"non-finite logits on this prompt: {e}", code="non_finite_logits",
                                            param="alpha"))
                else:  # find whose prompt overflows: each request again, alone (same seeds, same tokens)
                    for job in jobs:
                        self._solo(job)
            except Exception as e:  # never let one batch take the server down
                log.exception("decoding a batch of %d request(s) failed", len(jobs))
                for job in jobs:
                    job.fail(ServeError(500, f"decoding failed: {type(e).__name__}: {e}", code="decoding_failed"))

    def _solo(self, job: _Job) -> None:
        if job.finished or job.cancelled:
            return
        try:
            self._decode([job])
        except NonFiniteLogitsError as e:
            job.fail(ServeError(400, f"α={job.spec.alpha:g} (temperature {job.spec.temperature:g}) gives "
                                f"non-finite logits on this prompt: {e}", code="non_finite_logits", param="alpha"))

    def _decode(self, jobs: list[_Job]) -> None:
        """One batch through the sampler's loop; the hook delivers replies as they end."""
        first = jobs[0].spec
        rows = [(job, i) for job in jobs for i in range(job.spec.n)]
        prompts = {id(job): job.spec.rollout_prompt() for job in jobs}
        requests = [SampleRequest(prompts[id(job)], i) for job, i in rows]
        sampler = PathSampler(self.pair, temperature=first.temperature, max_new_tokens=max(j.spec.max_tokens for j in jobs),
                              top_k=first.top_k, top_p=first.top_p, batch_size=len(rows), chat=False, seed=self.seed)
        top_k = max(job.spec.top_logprobs if job.spec.logprobs else 0 for job in jobs)
        self.batches += 1

        def on_step(view) -> list[int]:
            tokens = view.tokens.tolist()
            picked = view.log_q.gather(-1, view.tokens.unsqueeze(-1)).squeeze(-1).tolist()
            if top_k:
                top_vals, top_ids = view.log_q.topk(top_k, dim=-1)
                top_vals, top_ids = top_vals.tolist(), top_ids.tolist()
            ended = []
            for j, row in enumerate(view.rows):
                job, i = rows[row]
                reply = job.replies[i]
                if job.cancelled or job.finished or reply.finish is not None:
                    ended.append(row)
                    continue
                if view.step < len(reply.text.tokens):  # a rerun redrawing tokens already sent
                    continue
                k = job.spec.top_logprobs if job.spec.logprobs else 0
                top = tuple(zip(top_ids[j][:k], top_vals[j][:k])) if k else ()
                piece = reply.add(tokens[j], picked[j], top)
                if job.spec.stream:
                    job.emit(TokenEvent(i, tokens[j], piece, picked[j], top))
                if reply.finish is not None:
                    self._reply_done(job, i)
                    ended.append(row)
            return ended

        for _ in sampler.iter_batches(requests, Proposal(alpha=first.alpha), on_step=on_step):
            pass
        for job, i in rows:  # the loop ended these rows itself (its token limit is the batch's largest)
            if job.replies[i].finish is None and not job.finished:
                job.replies[i].finish = "length"
                self._reply_done(job, i)
        # replies that ended at the last step were just delivered: their clients have not come back yet
        last = max(len(job.replies[i].text.tokens) for job, i in rows)
        returning = sum(len(job.replies[i].text.tokens) == last for job, i in rows)
        with self._cond:
            self._want = sum(j.spec.n for j in self._queue if not j.cancelled) + returning

    def _reply_done(self, job: _Job, i: int) -> None:
        reply = job.replies[i]
        rest = reply.text.finish()
        choice = Choice(index=i, token_ids=tuple(reply.text.tokens), text=reply.text.final(),
                        finish_reason=reply.finish, logprobs=tuple(reply.logprobs), top_logprobs=tuple(reply.tops))
        job.emit(ChoiceDone(choice, rest))
        if all(r.finish is not None for r in job.replies) and not job.finished:
            job.finished = True
            job.emit(JobDone(job.prompt_tokens))
