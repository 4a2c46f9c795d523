"""The identity check: before any rollout, the engine must serve the model we score with.

A few prompts are continued by the engine; the sampled tokens' log-probabilities (at the run's
temperature) and an echo-scoring of the same sequences (temperature 1) are compared token by token
with our own teacher-forced forward of the model. Another model behind the URL, another tokenizer
(its ids mean other tokens, so the log-probabilities disagree), the log-probabilities of another
temperature or an engine in reduced precision all show up as a gap. Above ``tolerance`` nats the
check stops the run with a message; the measured gap is recorded with the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..models import LoadedModel
from ._base import Engine, EngineIdentityError

__all__ = ["check_identity", "teacher_forced"]


@torch.no_grad()
def teacher_forced(lm: LoadedModel, vocab: int, sequences: Sequence[Sequence[int]], starts: Sequence[int],
                   temperature: float = 1.0) -> list[list[float]]:
    """Our own log q(sequence[t] | sequence[:t]) at ``temperature`` for t ≥ start, one model, one forward each."""
    out = []
    device = next(lm.model.parameters()).device
    for seq, start in zip(sequences, starts, strict=True):
        ids = torch.tensor([list(map(int, seq))], device=device)
        logits = lm.model(input_ids=ids).logits[0, start - 1 : len(seq) - 1, :vocab].float()
        logq = torch.log_softmax(logits / temperature, dim=-1)
        picks = ids[0, start:].unsqueeze(-1)
        out.append(logq.gather(-1, picks).squeeze(-1).double().tolist())
    return out


def check_identity(engine: Engine, lm: LoadedModel, vocab: int, prompts: Sequence[Sequence[int]], *,
                   temperature: float, tolerance: float = 2e-3, max_tokens: int = 16, label: str = "the target"
                   ) -> dict[str, Any]:
    """Compare ``engine`` with ``lm`` on continuations of ``prompts`` (token ids); return the measured gaps.

    Raises:
        EngineIdentityError: a per-token log-probability gap above ``tolerance`` (nats).
    """
    prompts = [list(map(int, p)) for p in prompts]
    conts = engine.generate(prompts, max_tokens, temperature)
    seqs = [p + list(c.token_ids) for p, c in zip(prompts, conts)]
    starts = [len(p) for p in prompts]
    ours_t = teacher_forced(lm, vocab, seqs, starts, temperature)
    sampled_gap = max(abs(a - b) for c, o in zip(conts, ours_t) for a, b in zip(c.logprobs, o))
    theirs_1 = engine.score(seqs, starts)
    ours_1 = ours_t if temperature == 1.0 else teacher_forced(lm, vocab, seqs, starts, 1.0)
    if any(len(a) != len(b) for a, b in zip(theirs_1, ours_1)):
        raise EngineIdentityError(f"the engine scored other positions than it was sent ({engine.describe()})")
    scored_gap = max(abs(a - b) for t, o in zip(theirs_1, ours_1) for a, b in zip(t, o))
    tokens = sum(len(c.token_ids) for c in conts)
    report = {"engine": engine.describe(), "model": label, "tokens": tokens, "tolerance": tolerance,
              "max_gap_sampled": sampled_gap, "max_gap_scored": scored_gap}
    where = engine.describe().get("model")
    if scored_gap > tolerance:
        raise EngineIdentityError(
            f"the engine (model {where!r}) does not serve {label} ({lm.name}): its log-probabilities of the "
            f"same {tokens} tokens differ from ours by up to {scored_gap:.3g} nats (tolerance {tolerance:g}). "
            f"Serve {lm.name} there (in float32), or point --engine at a server that does (docs/engines.md).")
    if sampled_gap > tolerance:
        hint = (" It scores like our model at temperature 1, so it reports log-probabilities before temperature: "
                "start vLLM with --logprobs-mode processed_logprobs." if temperature != 1.0 else "")
        raise EngineIdentityError(
            f"the engine's log-probabilities of its own samples differ from ours by up to {sampled_gap:.3g} nats "
            f"(tolerance {tolerance:g}) at temperature {temperature:g}.{hint} (docs/engines.md)")
    return report
