"""Removing a direction from the residual stream: at inference time (hooks) or in the weights.

Both follow METHODS.md §4. A module that writes ``y = W x + b`` into the residual stream writes
``y − r̂ r̂ᵀ y = (W − r̂ r̂ᵀ W) x + (b − r̂ r̂ᵀ b)`` once the direction is removed, so projecting
every writer's output (:func:`ablate_direction`) and editing every writer's weight and bias
(:func:`orthogonalize_weights`) give the same model. Since the residual stream is the sum of the
writers' outputs, it then has no component along r̂ at any layer or position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ._arch import ResidualLayout, Writer, residual_layout

__all__ = [
    "WeightEdit", "ablate_direction", "orthogonalize_weights", "quantization_method", "unit", "untie_output_embedding",
]


def unit(direction: torch.Tensor, what: str = "direction") -> torch.Tensor:
    """``direction`` as a float32 unit vector; an error if it is zero or not finite."""
    r = direction.detach().float().flatten()
    norm = float(r.norm())
    if not norm > 1e-12 or not torch.isfinite(r).all():
        raise ValueError(f"the {what} has norm {norm:.3g}; it cannot be normalised")
    return r / norm


@contextlib.contextmanager
def ablate_direction(model: nn.Module, direction: torch.Tensor) -> Iterator[None]:
    """Inside the block, every write into the residual stream has its component along
    ``direction`` projected out (forward hooks; the weights are not touched)."""
    layout = residual_layout(model)
    r = unit(direction)
    _check_size(layout, r)

    def hook(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        rr = r.to(device=out.device, dtype=out.dtype)
        projected = out - (out @ rr).unsqueeze(-1) * rr
        return (projected, *output[1:]) if isinstance(output, tuple) else projected

    handles = [w.module.register_forward_hook(hook) for w in layout.writers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class WeightEdit:
    """What :func:`orthogonalize_weights` changed."""

    edited: tuple[str, ...]
    untied: bool
    norm_preserving: bool
    approximate: str | None = None


def untie_output_embedding(model: nn.Module, embedding: nn.Module) -> bool:
    """Give the LM head its own copy of the weight it shares with ``embedding`` (True if it did).

    Editing a tied embedding would also edit the unembedding, which inference-time ablation leaves
    alone; untying keeps the two models equal and says so.
    """
    head = model.get_output_embeddings()
    if head is None or head.weight.data_ptr() != embedding.weight.data_ptr():
        return False
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return True


@torch.no_grad()
def _project_writer(writer: Writer, r: torch.Tensor, norm_preserving: bool) -> None:
    """W ← W − r̂ r̂ᵀ W along the weight's residual axis, in place, one matrix at a time."""
    weight = writer.module.weight
    w = weight.data if weight.dtype == torch.float32 else weight.data.float()
    rr = r.to(w.device)
    # residual vectors are the columns of a (hidden, k) weight and the rows of a (k, hidden) one
    before = w.norm(dim=writer.residual_axis) if norm_preserving else None
    if writer.residual_axis == 0:
        w.addr_(rr, rr @ w, alpha=-1.0)
    else:
        w.addr_(w @ rr, rr, alpha=-1.0)
    if before is not None:
        after = w.norm(dim=writer.residual_axis).clamp_min(1e-12)
        scale = before / after
        w.mul_(scale.unsqueeze(0) if writer.residual_axis == 0 else scale.unsqueeze(1))
    if w is not weight.data:
        weight.data.copy_(w)
    bias = getattr(writer.module, "bias", None)
    if bias is not None:
        b = bias.data.float()
        norm = b.norm()
        b -= (b @ rr) * rr
        if norm_preserving:
            b *= norm / b.norm().clamp_min(1e-12)
        bias.data.copy_(b)


def orthogonalize_weights(model: nn.Module, direction: torch.Tensor, *, norm_preserving: bool = False) -> WeightEdit:
    """Remove ``direction`` from every weight that writes into the residual stream, in place.

    Args:
        model: a causal LM of a supported family (see :mod:`tailscope.abliteration._arch`).
        direction: the refusal direction r (any norm; normalised here).
        norm_preserving: rescale each edited residual vector (a column of a Linear weight, a row
            of a Conv1D or embedding weight, a bias) back to its norm before the edit. The result
            no longer equals inference-time ablation.

    Returns:
        The edited module names and whether the LM head was untied from the embedding first.
    """
    layout = residual_layout(model)
    r = unit(direction)
    _check_size(layout, r)
    method = quantization_method(model)
    if method not in (None, "gguf"):
        raise ValueError(f"the model is quantized with {method}; its packed weights cannot be edited: load it in "
                         "float32, float16 or bfloat16 to abliterate it")
    untied = untie_output_embedding(model, layout.embedding)
    for writer in layout.writers:
        _project_writer(writer, r, norm_preserving)
    return WeightEdit(tuple(w.name for w in layout.writers), untied, norm_preserving, layout.approximate)


def quantization_method(model: nn.Module) -> str | None:
    """The transformers quantization method of ``model`` (None when it has none). A GGUF checkpoint is
    dequantized into ordinary float weights when transformers loads it."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return None
    method = quantizer.quantization_config.quant_method
    return str(getattr(method, "value", method))


def _check_size(layout: ResidualLayout, r: torch.Tensor) -> None:
    if r.numel() != layout.hidden_size:
        raise ValueError(f"the direction has {r.numel()} components but the residual stream has {layout.hidden_size}")
