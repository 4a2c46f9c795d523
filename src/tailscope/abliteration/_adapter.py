"""Abliteration as a PEFT LoRA adapter: the weight edit of METHODS.md §4 as an exact low-rank update.

For a matrix whose output is a residual-stream vector, the edit ``W' = (I − r̂ r̂ᵀ) W`` is
``W + B A`` with ``B = −r̂`` (hidden × 1) and ``A = r̂ᵀ W`` (1 × in): a rank-1 LoRA update with
scaling 1. The same holds for each kind of writer abliteration edits:

=====================  ==============================  ============================  ======
writer                 weight                          LoRA factors (PEFT names)     rank
=====================  ==============================  ============================  ======
``nn.Linear``          W (hidden, in)                  lora_A = r̂ᵀW, lora_B = −r̂     1
GPT-2 ``Conv1D``       W (in, hidden), fan-in-fan-out  lora_A = (W r̂)ᵀ, lora_B = −r̂  1
``nn.Embedding``       E (vocab, hidden)               lora_embedding_A = (E r̂)ᵀ,     1
                                                       lora_embedding_B = −r̂
=====================  ==============================  ============================  ======

Where it does not apply (the edit is then written as a full checkpoint, or applied at inference
time with :func:`~tailscope.abliteration.ablate_direction`):

* **norm-preserving** edits, ``W' = (I − r̂ r̂ᵀ) W D`` with ``D`` the diagonal of per-vector norm
  ratios: ``W' − W = W (D − I) − r̂ r̂ᵀ W D`` has full rank, min(hidden, in) per matrix (576 for
  each of SmolLM2-135M's o_proj and down_proj), so the exact adapter is larger than the matrix;
* **biased writers** (GPT-2's projections): the bias edit ``b − r̂ r̂ᵀ b`` needs PEFT's
  ``lora_bias``, which PEFT applies to every adapted module and does not support on embeddings;
* **quantized** weights (bitsandbytes, GPTQ, AWQ …): ``A = r̂ᵀ W`` needs the float weights.

A tied LM head is left as it is: the LoRA update acts on the embedding lookup only, which is what
the checkpoint edit gives after it unties the head. Merging the adapter (``merge_and_unload``)
into a model whose head is still tied would move the head too; untie first (``load_model`` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ._arch import Writer, residual_layout
from ._edit import _check_size, quantization_method, unit

__all__ = ["ADAPTER_RANKS", "abliteration_adapter", "remove_adapter", "save_adapter"]

ADAPTER_RANKS = {"Linear": 1, "Conv1D": 1, "Embedding": 1}


def _refuse(model: torch.nn.Module, writers: tuple[Writer, ...], norm_preserving: bool) -> None:
    if norm_preserving:
        raise ValueError(
            "a norm-preserving edit has no exact low-rank form (W' − W has full rank, min(hidden, in) per matrix): "
            "drop --as-adapter to save the edited checkpoint, or drop --norm-preserving"
        )
    method = quantization_method(model)
    if method not in (None, "gguf"):
        raise ValueError(f"the model is quantized with {method}: the adapter factors need its float weights; load "
                         "it in float32, float16 or bfloat16")
    biased = [w.name for w in writers if getattr(w.module, "bias", None) is not None]
    if biased:
        raise ValueError(
            f"{len(biased)} residual writers have biases (e.g. {biased[0]}), whose edit a LoRA adapter cannot hold "
            "next to the embedding's (PEFT's lora_bias does not support embeddings): drop --as-adapter to save the "
            "edited checkpoint, or use tailscope.abliteration.ablate_direction at inference time"
        )


@torch.no_grad()
def abliteration_adapter(model: torch.nn.Module, direction: torch.Tensor, *, adapter_name: str = "abliterated",
                         norm_preserving: bool = False) -> Any:
    """Inject into ``model`` a rank-1 LoRA adapter that removes ``direction`` from the residual stream.

    The base weights are not touched; the returned PEFT model (wrapping ``model`` in place) runs
    the abliterated model while the adapter is active. :func:`save_adapter` writes it;
    :func:`remove_adapter` takes it out again.
    """
    from peft import LoraConfig, get_peft_model

    layout = residual_layout(model)
    r = unit(direction)
    _check_size(layout, r)
    _refuse(model, layout.writers, norm_preserving)
    conv1d = any(type(w.module).__name__ == "Conv1D" for w in layout.writers)
    config = LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, bias="none", target_modules=[w.name for w in layout.writers],
                        fan_in_fan_out=conv1d, init_lora_weights=False, task_type="CAUSAL_LM")
    from ..adapters import quiet_peft

    with quiet_peft():  # the tied head stays as it is: see the module docstring
        peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    for writer in layout.writers:
        layer = model.get_submodule(writer.name)
        w = layer.get_base_layer().weight.detach().float()
        rr = r.to(w.device)
        if isinstance(layer.get_base_layer(), torch.nn.Embedding):  # rows of E are residual vectors
            layer.lora_embedding_A[adapter_name].copy_((w @ rr).unsqueeze(0))
            layer.lora_embedding_B[adapter_name].copy_(-rr.unsqueeze(1))
        else:  # a Linear's columns, a Conv1D's rows
            a = rr @ w if writer.residual_axis == 0 else w @ rr
            layer.lora_A[adapter_name].weight.copy_(a.unsqueeze(0))
            layer.lora_B[adapter_name].weight.copy_(-rr.unsqueeze(1))
        if layer.scaling[adapter_name] != 1.0:
            raise RuntimeError(f"PEFT scales {writer.name}'s update by {layer.scaling[adapter_name]}, not 1")
    peft_model.eval()
    return peft_model


def save_adapter(peft_model: Any, out: str | Path, *, base: str, record: dict[str, Any],
                 adapter_name: str = "abliterated") -> Path:
    """Save the adapter (PEFT's own format) with ``tailscope_adapter.json``: the base's fingerprint and ``record``."""
    from ..adapters import record_base

    out = Path(out)
    # save_embedding_layers=False: the LoRA factors of the embedding, not a copy of the base embedding itself
    peft_model.save_pretrained(out, selected_adapters=[adapter_name], safe_serialization=True, save_embedding_layers=False)
    if adapter_name != "default":  # PEFT puts a non-default adapter in a subfolder; the top level is simpler to load
        for f in (out / adapter_name).iterdir():
            f.replace(out / f.name)
        (out / adapter_name).rmdir()
    (out / "README.md").unlink(missing_ok=True)  # PEFT's blank model-card template
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    # the fingerprint reads the base layers' own weights (the LoRA factors are left out)
    record_base(out, peft_model.get_base_model(), base=base, kind="abliteration", ranks=dict(ADAPTER_RANKS), **record)
    return out


def remove_adapter(peft_model: Any) -> torch.nn.Module:
    """Take the adapter's layers out of the model again (nothing merged): the plain base model."""
    return peft_model.unload()
