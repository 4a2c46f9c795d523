"""The distributions on the logit path, one step at a time (METHODS.md §1, §2).

Pure tensor functions shared by the sampler and by teacher-forced scoring, so that what the
sampler records and what scoring recomputes are the same arithmetic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

__all__ = ["NonFiniteLogitsError", "Proposal", "path_logprobs", "proposal_logprobs"]


class NonFiniteLogitsError(FloatingPointError):
    """NaN or +inf logits: from a model, or from combining two models at an extreme α."""


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
        """A canonical text form, e.g. ``a=0.3`` or ``a=0;switch=8;mix=0.5``; parsed by :meth:`parse`."""
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

    @classmethod
    def parse(cls, text: str | float | Proposal) -> Proposal:
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
                raise ValueError(f"unknown proposal field {name!r} in {text!r} (use a=, switch=, mix=)")
            field_name = fields[name.strip()]
            kwargs[field_name] = int(value) if field_name == "switch_after" else float(value)
        return cls(**kwargs)  # type: ignore[arg-type]

    def moved(self, alpha: float) -> Proposal:
        """The same proposal shape (switch point, mixture weight) at another point of the path.

        A rollout's ``logprob_grid`` records log q under ``moved(β)`` for each β: for a pure point
        that is q_β itself; for a switching proposal every component switches to the target at the
        same step, so the ratios between components depend only on the tokens before the switch.
        """
        return Proposal(alpha=alpha, switch_after=self.switch_after, mixture=self.mixture)

    def __str__(self) -> str:
        return self.key


def path_logprobs(log_a: torch.Tensor, log_b: torch.Tensor, alpha: float, temperature: float = 1.0) -> torch.Tensor:
    """log q_α = log_softmax((l_A + α (l_B − l_A)) / T) from the two models' log-softmaxed logits.

    ``log_a`` and ``log_b`` are ``log_softmax`` of each model's float32 logits, shape (..., V).
    α = 0 and α = 1 return the endpoints exactly (no 0·(−inf) arithmetic).
    """
    if alpha == 0.0:
        mixed = log_a
    elif alpha == 1.0:
        mixed = log_b
    else:
        # a 0-dim tensor keeps float32 arithmetic; an α past float32's range overflows to inf and is caught
        mixed = log_a + (log_b - log_a) * torch.tensor(alpha, dtype=log_a.dtype, device=log_a.device)
    if temperature == 1.0 and alpha in (0.0, 1.0):
        return mixed  # already normalised
    return torch.log_softmax(mixed / temperature, dim=-1)


def proposal_logprobs(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    proposal: Proposal,
    step: int,
    temperature: float = 1.0,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-token log-probabilities a proposal samples from at reply position ``step`` (0-based).

    ``target`` may pass the already computed log q_1 to save a softmax.
    """
    if proposal.switch_after is not None and step >= proposal.switch_after:
        return target if target is not None else path_logprobs(log_a, log_b, 1.0, temperature)
    q_alpha = path_logprobs(log_a, log_b, proposal.alpha, temperature)
    if not proposal.mixture:
        return q_alpha
    q_one = target if target is not None else path_logprobs(log_a, log_b, 1.0, temperature)
    lam = proposal.mixture
    return torch.logaddexp(q_alpha + math.log(lam), q_one + math.log1p(-lam))


def check_finite(log_q: torch.Tensor, *, what: str, alpha: float, step: int) -> None:
    """Raise NonFiniteLogitsError if any row holds NaN or +inf (−inf alone is a zero probability)."""
    bad = torch.isnan(log_q).any(dim=-1) | torch.isposinf(log_q).any(dim=-1) | torch.isneginf(log_q).all(dim=-1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()[:5]
        raise NonFiniteLogitsError(
            f"non-finite values in {what} at α={alpha:g}, reply step {step} (batch rows {rows}). "
            "At extreme α the combined logits overflow; use a smaller |α| or a float32 model."
        )


def truncate(log_q: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Top-k then top-p truncation of a log-distribution, renormalised (applied after combining)."""
    if top_k is not None and top_k < log_q.shape[-1]:
        kth = torch.topk(log_q, top_k, dim=-1).values[..., -1:]
        log_q = log_q.masked_fill(log_q < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_lq, order = torch.sort(log_q, dim=-1, descending=True)
        cum = sorted_lq.exp().cumsum(-1)
        # drop a token when the mass before it already reaches top_p (always keep the first)
        drop_sorted = (cum - sorted_lq.exp()) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        log_q = log_q.masked_fill(drop, -math.inf)
    if top_k is not None or top_p is not None:
        log_q = torch.log_softmax(log_q, dim=-1)
    return log_q
