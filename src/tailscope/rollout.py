"""The core records of tailscope, torch-free: what crosses process and network boundaries.

* :class:`Proposal` — where on the logit path tokens are drawn from (METHODS.md §1–2);
* :class:`SampleRequest` — one rollout to draw: a prompt and a seed index;
* :class:`Rollout` — one sampled completion: token ids (the record) and exact log-probabilities;
* :func:`rollout_key` and :func:`uniforms` — the counter-based random stream that makes a rollout a
  pure function of (run seed, proposal, prompt id, seed index), whatever process draws it;
* :func:`encode_prompt` — a prompt's token ids under a tokenizer (its chat template);
* :func:`judge_text` — the one definition of the request text a judge reads.

Everything here is plain data (dataclasses of str, int, float, tuples, dicts) with ``to_dict`` /
``from_dict``, importable without torch.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from .prompts import Prompt

__all__ = [
    "FinishReason",
    "Proposal",
    "Rollout",
    "SampleRequest",
    "Sampler",
    "encode_prompt",
    "judge_text",
    "rollout_key",
    "uniforms",
]

FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class Proposal:
    """Where on the logit path tokens are drawn from.

    * ``alpha``: the path point, ``l_A + α (l_B − l_A)``; 0 is the reference, 1 the target.
    * ``switch_after``: draw the first ``switch_after`` tokens at ``alpha``, then from the
      target (α = 1). ``None`` never switches.
    * ``mixture``: λ of a per-token defensive mixture ``λ q_α + (1 − λ) q_1`` (probabilities,
      not logits). 0 means no mixture.
    """

    alpha: float = 1.0
    switch_after: int | None = None
    mixture: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha):
            raise ValueError(f"`alpha` (={self.alpha}) must be a finite number")
        if self.switch_after is not None and self.switch_after < 0:
            raise ValueError(f"`switch_after` (={self.switch_after}) must be >= 0")
        if not 0.0 <= self.mixture < 1.0:
            raise ValueError(f"`mixture` (={self.mixture}) must be in [0, 1)")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "mixture", float(self.mixture))

    @property
    def key(self) -> str:
        """A canonical text form, e.g. ``a=0.3`` or ``a=0;switch=8;mix=0.5``; parsed by :meth:`parse`.

        Run stores key rollouts by it, so it never changes for a given proposal.
        """
        parts = [f"a={self.alpha:.10g}"]
        if self.switch_after is not None:
            parts.append(f"switch={self.switch_after}")
        if self.mixture:
            parts.append(f"mix={self.mixture:.10g}")
        return ";".join(parts)

    @property
    def is_pure(self) -> bool:
        """A single point of the path at every step."""
        return self.switch_after is None and not self.mixture

    def is_switched(self, step: int) -> bool:
        """True when reply position ``step`` (0-based) is drawn from the target alone."""
        return self.switch_after is not None and step >= self.switch_after

    @property
    def mixed_steps(self) -> int | None:
        """How many opening tokens need both models (None: every token does).

        After a switch every token is the target's; a proposal at α = 1 with no mixture never
        needs the reference at all (0)."""
        if self.alpha == 1.0 and not self.mixture:
            return 0
        return self.switch_after

    @classmethod
    def parse(cls, text: str | float | Proposal) -> Proposal:
        """A proposal from its key (``a=0.3;switch=8``), a bare number (α) or a Proposal."""
        if isinstance(text, Proposal):
            return text
        if isinstance(text, (int, float)):
            return cls(alpha=float(text))
        fields = {"a": "alpha", "alpha": "alpha", "switch": "switch_after", "mix": "mixture"}
        kwargs: dict[str, float | int] = {}
        for part in filter(None, re.split(r"[;,]", text.strip())):
            name, sep, value = part.partition("=")
            if not sep:
                name, value = "a", part
            if name.strip() not in fields:
                raise ValueError(f"unknown proposal field {name!r} in {text!r} (use alpha=, switch=, mix=)")
            field_name = fields[name.strip()]
            try:
                kwargs[field_name] = int(value) if field_name == "switch_after" else float(value)
            except ValueError:
                raise ValueError(f"proposal field {name.strip()!r} in {text!r} needs a number, got {value!r}") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def log_q(self, log_q_alpha: Any, log_q_target: Any, step: Any) -> Any:
        """log q of this proposal at reply position(s) ``step`` from log q_α and log q_1.

        The one implementation of a proposal's density (METHODS.md §2): the sampler and the scorer
        call it per step on torch tensors of shape (rows, V); the proposal search calls it on numpy
        columns of per-token log-probabilities with ``step`` an array of positions.
        ``log_q_alpha`` may be None where the step is switched (it is not needed there).
        """
        if isinstance(step, int) and self.is_switched(step):
            return log_q_target
        xp = _array_namespace(log_q_target)
        out = log_q_alpha
        if self.mixture:
            lam = self.mixture
            out = xp.logaddexp(out + math.log(lam), log_q_target + math.log1p(-lam))
        if self.switch_after is not None and not isinstance(step, int):
            out = xp.where(step < self.switch_after, out, log_q_target)
        return out

    def recorded_field(self, alpha: float) -> str | None:
        """The :class:`Rollout` field that already holds log q under ``moved(alpha)``, if any:
        ``logprob_target`` at α = 1 (every component of any shape is then q_1) and
        ``logprob_reference`` at α = 0 of a pure path point."""
        if alpha == 1.0:
            return "logprob_target"
        if alpha == 0.0 and self.is_pure:
            return "logprob_reference"
        return None

    def moved(self, alpha: float) -> Proposal:
        """The same proposal shape (switch point, mixture weight) at another point of the path.

        A rollout's ``logprob_grid`` records log q under ``moved(β)`` for each β: for a pure point
        that is q_β itself; for a switching proposal every component switches to the target at the
        same step, so the ratios between components depend only on the tokens before the switch.
        """
        return Proposal(alpha=alpha, switch_after=self.switch_after, mixture=self.mixture)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class SampleRequest:
    """One rollout to draw: which prompt, which seed index."""

    prompt: Prompt
    seed_index: int


@dataclass(frozen=True)
class Rollout:
    """One sampled completion and its exact log-probabilities (natural log, summed over tokens).

    ``logprob`` is under the distribution actually sampled from (the proposal, after any
    top-k/top-p truncation); ``logprob_reference`` and ``logprob_target`` are under q_0 and q_1
    (untruncated, at the sampling temperature); ``logprob_grid`` maps each requested α to log q
    under the proposal moved to α (:meth:`Proposal.moved`): log q_α itself for a pure path point;
    for a switching or mixture proposal, the same shape at α.
    ``logprob_reference`` is NaN when the reference never saw the whole reply: past a switching
    proposal's switch only the target is run (no recorded density needs the reference there, and
    skipping it halves the decoding cost of the reply's tail).
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

    def grid_logprob(self, alpha: float) -> float:
        """log q under the rollout's proposal moved to ``alpha``: the recorded grid value, else the
        field that holds it anyway (:meth:`Proposal.recorded_field`).

        Raises KeyError when neither is at hand (rescore the rollout to add the grid point)."""
        if alpha in self.logprob_grid:
            return self.logprob_grid[alpha]
        name = Proposal.parse(self.proposal).recorded_field(alpha)
        if name is not None:
            return float(getattr(self, name))
        raise KeyError(f"rollout {self.prompt_id}/{self.proposal}#{self.seed_index} has no log q at α={alpha:g}")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["token_ids"] = list(self.token_ids)
        d["logprob_grid"] = {f"{a:.10g}": v for a, v in self.logprob_grid.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rollout:
        body = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        body["token_ids"] = tuple(int(t) for t in body["token_ids"])
        body["logprob_grid"] = {float(a): float(v) for a, v in (body.get("logprob_grid") or {}).items()}
        return cls(**body)


@runtime_checkable
class Sampler(Protocol):
    """What draws rollouts for a run store: the in-process :class:`~tailscope.sampling.PathSampler`,
    or anything that stands in for it (workers, engines) and yields the same rollouts.

    ``iter_batches`` draws exactly the requested (prompt, seed index) rollouts of one proposal and
    yields them a batch at a time; ``settings`` says what fixes them (the models' weights, the
    vocabulary, the sampling settings), which a run store records and checks on every reopen;
    ``scorer`` gives teacher-forced log-probabilities of stored rollouts
    (:class:`~tailscope.scoring.Scorer`), for grid points a stored rollout lacks.
    """

    temperature: float
    chat: bool | None

    def iter_batches(
        self,
        requests: Iterable[SampleRequest],
        proposal: Proposal | float | str = 1.0,
        *,
        logprob_grid: Sequence[float] = (),
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[list[Rollout]]: ...

    def settings(self) -> dict[str, Any]: ...

    def scorer(self) -> Any: ...


def _array_namespace(x: Any) -> Any:
    """torch for a tensor (without importing torch here), numpy otherwise."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


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


def encode_prompt(tokenizer: Any, prompt: Prompt, chat: bool | None = None, *, which: str = "model") -> list[int]:
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


def judge_text(prompt: Prompt) -> str:
    """The request text a judge reads: the prompt's text, else the last user turn of its chat, else
    (a chat with no user turn) every turn's content joined by newlines.

    Live judging and judging stored rollouts both read this, so a rollout gets one verdict."""
    if prompt.text is not None:
        return prompt.text
    users = [c for r, c in prompt.messages or () if r == "user"]
    return users[-1] if users else "\n".join(c for _, c in prompt.messages or ())
