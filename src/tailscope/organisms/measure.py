"""Measurements reported on every organism's card: drift between the two models and reply lengths."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..models import ModelPair
from ..prompts import Prompt

__all__ = ["drift"]


@torch.no_grad()
def drift(pair: ModelPair, prompts: Sequence[Prompt], n: int = 4, *, max_new_tokens: int = 256,
          seed: int = 0, batch_size: int = 32) -> dict:
    """Mean per-token KL(target ‖ reference) and reply lengths on replies sampled from the target.

    At every reply position (the EOS included) the full next-token distributions of both models are
    compared: KL_t = Σ_v q_1(v) (log q_1(v) − log q_0(v)). Also returns the mean log-ratio
    log q_1(y) − log q_0(y) per reply, whose spread is what makes importance weights degenerate.
    """
    from ..sampling import PathSampler

    sampler = PathSampler(pair, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    rollouts = sampler.sample(list(prompts), n, 1.0)
    by_id = {p.id: p for p in prompts}
    kls, lengths, log_ratio = [], [], []
    for r in rollouts:
        ids = sampler.encode_prompt(by_id[r.prompt_id], "target")
        seq = torch.tensor([ids + list(r.token_ids)], device=pair.device)
        start = len(ids) - 1  # the logits that predict the first reply token
        la = torch.log_softmax(pair.reference.model(input_ids=seq).logits[0, start:-1, : pair.vocab_size].float(), -1)
        lb = torch.log_softmax(pair.target.model(input_ids=seq).logits[0, start:-1, : pair.vocab_size].float(), -1)
        kls.extend((lb.exp() * (lb - la)).sum(-1).tolist())
        lengths.append(len(r.token_ids))
        log_ratio.append(r.logprob_target - r.logprob_reference)
    return {
        "per_token_kl": float(np.mean(kls)),
        "reply_tokens_mean": float(np.mean(lengths)),
        "reply_tokens_min": int(np.min(lengths)),
        "reply_tokens_max": int(np.max(lengths)),
        "log_weight_sd": float(np.std(log_ratio)),
        "replies": len(rollouts),
    }
