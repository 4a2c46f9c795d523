"""The engine interface: plain sampling from one model, as token ids and their log-probabilities.

An engine never mixes two models. It continues token-id prefixes from the one model it serves at a
temperature, drawing from that model's full distribution (no truncation, no penalties, no stop
strings), stopping at the end-of-sequence tokens or a token limit. That is all the hybrid sampler
asks of it (docs/engines.md); everything that needs both models stays in our own loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "Continuation",
    "Engine",
    "EngineError",
    "EngineIdentityError",
    "EngineRequestError",
    "EngineResponseError",
    "EngineUnavailableError",
    "pure_sampling",
]


class EngineError(RuntimeError):
    """An engine could not be used; the message says what to do."""


class EngineUnavailableError(EngineError):
    """The engine did not answer (down, timing out, overloaded) after the bounded retries."""


class EngineRequestError(EngineError):
    """The engine refused a request (a 4xx answer other than 429): retrying will not help."""


class EngineResponseError(EngineError):
    """The engine answered with something that is not a valid continuation (truncated or malformed)."""


class EngineIdentityError(EngineError):
    """The engine does not serve the model we score with (another model, tokenizer or numerics)."""


@dataclass(frozen=True)
class Continuation:
    """New tokens continuing one prefix, with each token's log-probability under the served model
    at the sampling temperature. ``finish_reason`` is ``eos`` (the last token is an end token) or
    ``length`` (the token limit was reached)."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: Literal["eos", "length"]

    @property
    def logprob(self) -> float:
        return math.fsum(self.logprobs)


def pure_sampling(temperature: float, eos_token_ids: Sequence[int]) -> dict[str, Any]:
    """The sampling settings every engine request uses: the model's own distribution at ``temperature``.

    top-p 1 and no top-k / min-p (full support, which reweighting needs), no penalties or logit bias
    (they change the distribution), no stop strings (stops are decided on token ids), the end tokens
    as the only stop, EOS not ignored. Recorded in a run's config.
    """
    return {
        "temperature": float(temperature), "top_p": 1.0, "top_k": None, "min_p": 0.0,
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0,
        "stop": [], "stop_token_ids": sorted(int(t) for t in eos_token_ids), "ignore_eos": False,
    }


@runtime_checkable
class Engine(Protocol):
    """Continues token-id prefixes from one model.

    ``describe()`` is what identifies the engine in a run's config (kind, served model, settings);
    ``generate`` draws one continuation per prefix; ``score`` returns the served model's
    log-probabilities of given tokens (at temperature 1, for the identity check).
    """

    kind: str

    def describe(self) -> dict[str, Any]: ...

    def generate(self, prefixes: Sequence[Sequence[int]], max_tokens: int, temperature: float) -> list[Continuation]:
        ...

    def score(self, sequences: Sequence[Sequence[int]], starts: Sequence[int]) -> list[list[float]]:
        """log p(sequence[t] | sequence[:t]) for t ≥ start, one list per sequence."""
        ...

    def close(self) -> None: ...


def check_continuation(c: Continuation, max_tokens: int, eos: frozenset[int], vocab: int | None, where: str) -> None:
    """Raise EngineResponseError unless ``c`` is a well-formed continuation of at most ``max_tokens``."""
    n = len(c.token_ids)
    problem = None
    if n != len(c.logprobs):
        problem = f"{n} tokens but {len(c.logprobs)} log-probabilities"
    elif n > max_tokens:
        problem = f"{n} tokens for a limit of {max_tokens}"
    elif n == 0:
        problem = "no tokens"
    elif vocab is not None and any(not 0 <= t < vocab for t in c.token_ids):
        problem = f"token ids outside the vocabulary of {vocab}"
    elif any(not math.isfinite(x) or x > 1e-4 for x in c.logprobs):
        problem = "a log-probability that is not finite or is above 0"
    elif c.finish_reason == "eos" and c.token_ids[-1] not in eos:
        problem = (f"it stopped on token {c.token_ids[-1]}, not an end token {sorted(eos)} "
                   "(a stop setting or generation config on the server)")
    elif c.finish_reason == "length" and n != max_tokens:
        problem = f"it stopped for length after {n} of {max_tokens} tokens"
    elif any(t in eos for t in c.token_ids[:-1]):
        problem = "it went on past an end token (is ignore_eos set on the server?)"
    if problem:
        raise EngineResponseError(f"{where} returned an invalid continuation: {problem}")
