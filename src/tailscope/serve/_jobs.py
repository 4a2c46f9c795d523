"""What a client asks the engine for, and what comes back: plain records, no torch.

A :class:`GenerationSpec` is one request: a prompt, ``n`` replies, where on the logit path to draw
them and how. The engine answers with events: a :class:`TokenEvent` per drawn token (streaming
requests only), a :class:`ChoiceDone` per reply as soon as that reply ends, then :class:`JobDone`
(or :class:`JobFailed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..prompts import Prompt
from ._errors import ServeError

__all__ = ["Choice", "ChoiceDone", "Completion", "GenerationSpec", "JobDone", "JobFailed", "TokenEvent"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationSpec:
    """One request for ``n`` replies to ``prompt``, drawn from the path at ``alpha``.

    ``seed`` fixes the replies: reply ``i`` is the sampler's rollout with seed index ``i`` of a
    prompt whose id is derived from the prompt's content and this seed (see :meth:`rollout_prompt`),
    so the same request with the same seed gets the same tokens whatever it is batched with.
    ``top_logprobs`` (with ``logprobs``) asks for that many most likely tokens at each step.
    """

    prompt: Prompt
    n: int = 1
    alpha: float = 1.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int = 0
    logprobs: bool = False
    top_logprobs: int = 0
    stream: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ServeError(400, f"`n` (={self.n}) must be >= 1", param="n")
        if not math.isfinite(self.alpha):
            raise ServeError(400, f"`alpha` (={self.alpha}) must be a finite number", param="alpha")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ServeError(400, f"`temperature` (={self.temperature}) must be > 0: replies are sampled from the "
                             "path distribution (for near-greedy replies use a small value such as 0.05)",
                             param="temperature")
        if self.top_k is not None and self.top_k < 1:
            raise ServeError(400, f"`top_k` (={self.top_k}) must be a positive integer", param="top_k")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ServeError(400, f"`top_p` (={self.top_p}) must be in (0, 1]", param="top_p")
        if self.max_tokens < 1:
            raise ServeError(400, f"`max_tokens` (={self.max_tokens}) must be >= 1", param="max_tokens")
        if not 0 <= self.top_logprobs <= 20:
            raise ServeError(400, f"`top_logprobs` (={self.top_logprobs}) must be in 0..20", param="top_logprobs")

    @property
    def group(self) -> tuple:
        """Requests with the same group share one batch: one proposal and one temperature per batch."""
        return (self.alpha, self.temperature, self.top_k, self.top_p)

    def rollout_prompt(self) -> Prompt:
        """The prompt as the sampler sees it: its id carries the content and the seed, so the
        counter-based stream key (run seed, proposal, prompt id, seed index) is the request's own."""
        return Prompt(id=f"{self.prompt.content_hash}-s{self.seed}", text=self.prompt.text,
                      messages=self.prompt.messages)


@dataclass(frozen=True)
class Choice:
    """One finished reply: its token ids (the record), text, and per-token log-probabilities under
    the distribution it was drawn from (the path point after any top-k/top-p)."""

    index: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    logprobs: tuple[float, ...]
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()

    @property
    def logprob(self) -> float:
        """log q(reply | prompt): the sum over every drawn token, an end-of-reply token included."""
        return float(math.fsum(self.logprobs))


@dataclass(frozen=True)
class TokenEvent:
    choice: int
    token_id: int
    text: str  # the text this token releases (may be empty: held back, or a special token)
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class ChoiceDone:
    choice: Choice
    rest: str  # text of the reply not yet released by its TokenEvents


@dataclass(frozen=True)
class JobDone:
    prompt_tokens: int


@dataclass(frozen=True)
class JobFailed:
    error: ServeError


@dataclass
class Completion:
    """Every reply of one request, in choice order, with the request's token counts."""

    choices: list[Choice] = field(default_factory=list)
    prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.choices)
