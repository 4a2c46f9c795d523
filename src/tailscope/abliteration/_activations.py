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

__all__ = ["first_token_logprobs", "mean_activations", "opening_logprobs", "post_instruction_length"]

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


@torch.no_grad()
def opening_logprobs(
    model, tokenizer, prompts: Sequence[Prompt], openings: Sequence[Sequence[int]], *, batch_size: int = 8,
    chat: bool | None = None,
) -> torch.Tensor:
    """log P(the reply starts with the token sequence ``openings[j]``) for every prompt and opening,
    teacher-forced; float64 ``(len(prompts), len(openings))``."""
    if not openings or not all(openings):
        raise ValueError("every opening needs at least one token")
    longest = max(map(len, openings))
    rows = []
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(prompts), batch_size):
        heads = [encode_prompt(tokenizer, p, chat) for p in prompts[start:start + batch_size]]
        seqs = [h + list(o) for h in heads for o in openings]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, width - len(seq):] = torch.tensor(seq)
            mask[i, width - len(seq):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # left padding puts every opening at the end: only the last `longest + 1` logits are needed
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       use_cache=False, logits_to_keep=longest + 1).logits[:, :-1, :]
        totals = torch.zeros(len(seqs), dtype=torch.float64)
        for i, seq in enumerate(seqs):
            opening = torch.tensor(openings[i % len(openings)], device=logits.device)
            logp = torch.log_softmax(logits[i, longest - len(opening):].double(), dim=-1)
            totals[i] = logp.gather(-1, opening.unsqueeze(-1)).sum().cpu()
        rows.append(totals.view(len(heads), len(openings)))
    return torch.cat(rows)
