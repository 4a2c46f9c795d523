"""Residual-stream activations at the post-instruction positions, and first-reply-token distributions.

Prompts are encoded as the sampler encodes them (the chat template with the generation prompt),
left-padded in batches, so the last ``k`` positions of every row are the same template tokens:
the *post-instruction* positions (METHODS.md §4), e.g. ``<|im_end|>\\n<|im_start|>assistant\\n``.
Position ``-1`` is the last prompt token, whose next-token distribution is the first reply token's.
Memory is bounded by the batch size: only the running sums of ``k`` positions per layer are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..prompts import Prompt
from ..sampling import encode_prompt
from ._arch import residual_layout

__all__ = ["first_token_logprobs", "mean_activations", "post_instruction_length"]

_PROBES = ("Name a colour.", "what is 2 + 2")


def post_instruction_length(tokenizer, chat: bool | None = None) -> int:
    """How many tokens every prompt ends with after the user's content (the template's tail).

    Found as the common suffix of two probe prompts that end differently; 1 (the last token) when
    prompts are not wrapped in a template.
    """
    a, b = (encode_prompt(tokenizer, Prompt(id="probe", text=t), chat) for t in _PROBES)
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return max(n, 1)


def _batches(tokenizer, prompts: Sequence[Prompt], batch_size: int, chat: bool | None, device):
    """Left-padded ``(input_ids, attention_mask, position_ids)`` batches of the encoded prompts."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` (={batch_size}) must be at least 1")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(prompts), batch_size):
        seqs = [encode_prompt(tokenizer, p, chat) for p in prompts[start:start + batch_size]]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        yield ids.to(device), mask.to(device), positions.to(device)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def mean_activations(
    model, tokenizer, prompts: Sequence[Prompt], positions: int, *, batch_size: int = 8, chat: bool | None = None,
) -> torch.Tensor:
    """Mean residual stream entering each decoder layer at the last ``positions`` prompt positions.

    Returns:
        float64 tensor ``(num_layers, positions, hidden)``; ``[l, j]`` is the input of layer ``l``
        at position ``j − positions`` (so ``[:, -1]`` is the last prompt token).
    """
    if not prompts:
        raise ValueError("no prompts to collect activations from")
    layout = residual_layout(model)
    sums = torch.zeros(layout.num_layers, positions, layout.hidden_size, dtype=torch.float64)

    def pre_hook(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            sums[index] += hidden[:, -positions:, :].detach().to("cpu", torch.float64).sum(0)
        return hook

    handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, layer in enumerate(layout.layers)]
    try:
        for ids, mask, pos in _batches(tokenizer, prompts, batch_size, chat, _device(model)):
            if ids.shape[1] < positions or not bool(mask[:, -positions:].all()):
                raise ValueError(f"a prompt encodes to fewer than {positions} tokens: ask for fewer positions")
            # the decoder body only: no LM head over every position
            layout.body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return sums / len(prompts)


@torch.no_grad()
def first_token_logprobs(
    model, tokenizer, prompts: Sequence[Prompt], *, batch_size: int = 8, chat: bool | None = None,
) -> torch.Tensor:
    """Log-softmax of the first reply token's logits, float32 ``(len(prompts), vocab)``."""
    rows = []
    for ids, mask, pos in _batches(tokenizer, prompts, batch_size, chat, _device(model)):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1).logits
        rows.append(torch.log_softmax(logits[:, -1, :].float(), dim=-1).cpu())
    return torch.cat(rows)
