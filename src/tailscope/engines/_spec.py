"""Engines from a command-line value, and checkpoints in the form an engine loads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..models import LoadedModel, ModelPair
from ._base import Engine

__all__ = ["export_for_engine", "make_engine"]


def make_engine(spec: str, pair: ModelPair, *, which: str = "target", model: str | None = None,
                **kwargs: Any) -> Engine:
    """``vllm`` (in-process, loads ``model`` or the checkpoint directory of the pair's model) or one or
    more OpenAI-compatible base URLs, comma-separated (``http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1``)."""
    lm = pair.target if which == "target" else pair.reference
    eos = sorted(pair.eos_token_ids)
    if spec == "vllm":
        from ._vllm import VLLMEngine

        path = model or lm.name
        if "+" in path or not Path(path).exists() and path.count("/") != 1:
            raise ValueError(f"vLLM needs a checkpoint directory or hub id for the {which}, not {path!r}: "
                             "export it with tailscope.engines.export_for_engine (docs/engines.md)")
        return VLLMEngine(path, eos_token_ids=eos, vocab_size=pair.vocab_size, **kwargs)
    urls = [u.strip() for u in spec.split(",") if u.strip()]
    if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
        raise ValueError(f"--engine takes `vllm` or base URLs like http://127.0.0.1:8000/v1, not {spec!r}")
    from ._http import HTTPEngine

    return HTTPEngine(urls, model=model, eos_token_ids=eos, vocab_size=pair.vocab_size, **kwargs)


def export_for_engine(lm: LoadedModel, out: str | Path) -> Path:
    """Write a model as a plain checkpoint directory an engine can serve (safetensors, tokenizer,
    generation config): a LoRA adapter is merged into its base, a GGUF file dequantized."""
    out = Path(out)
    model = lm.model
    if hasattr(model, "merge_and_unload"):  # a PEFT model: serve the merged weights
        model = copy.deepcopy(model).merge_and_unload()
    else:  # one role of a shared base (ModelPair.load share=True): its adapter merged, the others dropped
        shared = getattr(model, "shared", None)
        base, adapter = (shared.model, model.adapter) if shared is not None else (model, None)
        if _has_lora_layers(base):
            model = _plain_copy(base, adapter)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None):
        # loaded from GGUF: the weights are already dequantized in memory; write them as a plain checkpoint
        from safetensors.torch import save_file

        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(out)
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        model.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    return out


def _has_lora_layers(model: Any) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module) and any(isinstance(m, BaseTunerLayer) for m in model.modules())


def _plain_copy(model: torch.nn.Module, adapter: str | None) -> torch.nn.Module:
    """A copy of a base with injected LoRA layers as a plain model: ``adapter`` merged into its
    weights (None: the base alone), every LoRA layer replaced by its base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from ..models import untie_output_embedding

    def edits(module: Any) -> bool:  # linear layers keep LoRA factors in lora_A, embeddings in lora_embedding_A
        return adapter is not None and any(adapter in getattr(module, f, {}) for f in ("lora_A", "lora_embedding_A"))

    clone = copy.deepcopy(model)
    if edits(clone.get_input_embeddings()):  # merging into a tied embedding would move the LM head too
        untie_output_embedding(clone)
    for name, module in list(clone.named_modules()):
        if not isinstance(module, BaseTunerLayer):
            continue
        if edits(module):
            module.merge(adapter_names=[adapter])
        parent, _, child = name.rpartition(".")
        setattr(clone.get_submodule(parent) if parent else clone, child, module.get_base_layer())
    return clone
