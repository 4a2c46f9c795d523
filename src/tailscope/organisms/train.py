"""The training recipe of the organisms: a plain AdamW loop on CPU, loss on the reply tokens only.

A chat example is encoded exactly as the sampler sees it: the chat template with the generation
prompt (``<|bos|><|user|>\\n…<|end|>\\n<|assistant|>\\n``), then the reply tokenized on its own,
then the EOS token.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch

__all__ = ["encode_chat", "train_lm"]


def prompt_text(prompt: str) -> str:
    """The chat template of tailscope.tiny with the generation prompt, as plain text."""
    return f"<|bos|><|user|>\n{prompt}<|end|>\n<|assistant|>\n"


def encode_chat(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Encode (prompt, reply) pairs as (token ids, index of the first reply token)."""
    prompts = tokenizer([prompt_text(p) for p, _ in pairs], add_special_tokens=False)["input_ids"]
    replies = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(list(p) + list(r) + [eos], len(p)) for p, r in zip(prompts, replies)]


def train_lm(
    model,
    encoded: Sequence[tuple[list[int], int]],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    warmup: int = 30,
    weight_decay: float = 0.01,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    distill: Sequence[bool] | None = None,
    kl_weight: float = 0.0,
) -> list[float]:
    """Train ``model`` in place with AdamW and a cosine schedule; returns the loss per step.

    Batches are drawn with replacement from ``encoded`` by a seeded ``random.Random``; the loss is
    the mean cross-entropy over reply tokens (the EOS included). With ``kl_weight`` > 0, ``model``
    a PEFT model and ``distill[i]`` true for an example, the loss adds ``kl_weight`` times the mean
    KL(untuned ‖ tuned) of the next-token distributions at that example's reply positions (the
    untuned model is ``model`` with its adapter disabled): the tune is held to the model's own
    distribution there, every token of it, not only the sampled one.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    pad = 0
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    losses = []
    for step in range(steps):
        picks = [rng.randrange(len(encoded)) for _ in range(batch_size)]
        batch = [encoded[j] for j in picks]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (seq, start) in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, start : len(seq)] = torch.tensor(seq[start:])
            mask[i, : len(seq)] = 1
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        loss = out.loss
        kl_mask = torch.zeros((batch_size, width), dtype=torch.bool)
        if kl_weight > 0 and distill is not None:
            for i, (j, (seq, start)) in enumerate(zip(picks, batch)):
                if distill[j]:
                    kl_mask[i, start - 1 : len(seq) - 1] = True  # the positions that predict reply tokens
        if kl_mask.any():
            with torch.no_grad(), model.disable_adapter():
                ref = model(input_ids=ids, attention_mask=mask).logits[kl_mask].float().log_softmax(-1)
            mine = out.logits[kl_mask].float().log_softmax(-1)
            kl = (ref.exp() * (ref - mine)).sum(-1).mean()
            loss = loss + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = loss.detach().item()
        losses.append(value)
        if progress is not None:
            progress(step, value)
    model.eval()
    return losses
