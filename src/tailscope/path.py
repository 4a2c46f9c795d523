"""The distributions on the logit path, one step at a time (METHODS.md §1, §2).

Pure tensor functions shared by the sampler and by teacher-forced scoring, so that what the
sampler records and what scoring recomputes are the same arithmetic. :class:`Proposal` itself is
plain data and lives in :mod:`tailscope.rollout`; it is re-exported here.
"""

from __future__ import annotations

import math

import torch

from .rollout import Proposal

__all__ = ["NonFiniteLogitsError", "Proposal", "path_logprobs", "proposal_logprobs"]


class NonFiniteLogitsError(FloatingPointError):
    """NaN or +inf logits: from a model, or from combining two models at an extreme α."""


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

    ``target`` may pass the already computed log q_1 to save a softmax. The combination itself is
    :meth:`Proposal.log_q`, shared with the proposal search.
    """
    if proposal.is_switched(step):
        return target if target is not None else path_logprobs(log_a, log_b, 1.0, temperature)
    q_alpha = path_logprobs(log_a, log_b, proposal.alpha, temperature)
    if not proposal.mixture:
        return q_alpha
    q_one = target if target is not None else path_logprobs(log_a, log_b, 1.0, temperature)
    return proposal.log_q(q_alpha, q_one, step)


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
