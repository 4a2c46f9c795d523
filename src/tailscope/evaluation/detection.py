"""Detection with logit diff amplification on organisms with exact ground truth.

* Rate vs amplification: at a = 0 the after model's rate is exact (ground truth, pooled over the
  prompts used); at a > 0 it is sampled (α = 1 + a) with an exact binomial interval. The gain is
  the amplified rate over the exact one: how many times fewer rollouts are needed to see the
  behaviour once.
* Monitoring a fine-tune: for each checkpoint along it, is the behaviour seen at least once within
  a fixed budget, with and without amplification (before = the checkpoint the fine-tune started
  from)? The earliest checkpoint where it is seen, for each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..estimators import LiveSource, RolloutSource
from ..lda import lda_sweep
from ..models import ModelPair
from ..sampling import PathSampler
from .metrics import label_probability

__all__ = ["amplification_curve", "checkpoint_monitoring"]


def amplification_curve(
    organism: Any,
    amplifications: Sequence[float],
    n: int,
    *,
    source: RolloutSource,
    prompt_limit: int | None = None,
) -> dict[str, Any]:
    """The behaviour's rate at each amplification on an organism's prompts (see the module docstring).

    Only prompts without a trigger are used. ``source`` draws and judges the rollouts (a
    StoreSource for a resumable run); its sampler's reply length is reported. The organisms'
    judges read the reply's opening, so replies can be cut short without changing a verdict.
    """
    prompts = [p for p in organism.prompts if not p.meta.get("trigger") and p.meta.get("kind") != "medical"]
    prompts = prompts[:prompt_limit] if prompt_limit else prompts
    exact = float(np.mean([organism.ground_truth[p.id]["rate"] for p in prompts]))
    tokens = source.sampler.max_new_tokens
    points = lda_sweep(source, prompts, amplifications, n)
    rows = []
    for p in points:
        d = p.to_dict()
        d.pop("per_prompt", None)
        d["examples"] = [{**e, "text": e["text"][:200]} for e in d["examples"][:2]]
        d["gain_vs_exact"] = (p.rate / exact) if exact > 0 and p.rate > 0 else None
        rows.append(d)
    return {"name": organism.name, "prompts": len(prompts), "rollouts_per_prompt": n, "max_new_tokens": tokens,
            "exact_rate_after": exact, "exact_rollouts_per_hit": (1 / exact) if exact > 0 else None, "points": rows}


def checkpoint_monitoring(
    organism: Any,
    amplification: float,
    budget: int,
    *,
    judge: Any,
    prompt_limit: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    max_new_tokens: int = 48,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """For each checkpoint: hits within ``budget`` rollouts (spread over prompts), with and without LDA."""
    prompts = [p for p in organism.prompts if not p.meta.get("trigger") and p.meta.get("kind") != "medical"]
    prompts = prompts[:prompt_limit]
    per_prompt = max(1, budget // len(prompts))
    rows = []
    for name in organism.checkpoints:
        after = organism.load_checkpoint(name)
        pair = ModelPair(organism.pair.reference, after)
        sampler = PathSampler(pair, max_new_tokens=min(max_new_tokens, organism.max_new_tokens), seed=seed,
                              batch_size=batch_size)
        plain, amplified = lda_sweep(LiveSource(sampler, judge, progress), prompts, [0.0, amplification], per_prompt)
        row = {"checkpoint": name, "rollouts": plain.rollouts, "hits_plain": plain.hits,
               "hits_amplified": amplified.hits, "rate_plain": plain.rate, "rate_amplified": amplified.rate}
        truth = organism.card.get("checkpoint_rates", {}).get(name)
        if truth is not None:
            row["exact_rate"] = float(truth)
            row["p_detect_plain"] = float(label_probability(np.array([float(truth)]), plain.rollouts)[0])
        rows.append(row)

    def first(key: str) -> str | None:
        return next((r["checkpoint"] for r in rows if r[key] > 0), None)

    return {"name": organism.name, "amplification": amplification, "budget": budget,
            "prompts": len(prompts), "checkpoints": rows,
            "first_detected_plain": first("hits_plain"), "first_detected_amplified": first("hits_amplified")}
