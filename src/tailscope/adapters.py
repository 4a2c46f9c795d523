"""One base model in memory for every pair member that is that base or that base plus a LoRA adapter.

A fine-tuning audit (``BASE`` against ``BASE+ADAPTER``), an abliterated reference written as an
adapter (``tailscope abliterate --as-adapter``) and two adapters of one base differ from each other
by low-rank changes, yet loading each in full doubles the memory. ``ModelPair.load`` (through :class:`~tailscope.models.SharedBases`) loads each
base once and hands out one :class:`~tailscope.models.LoadedModel` per role; each role's model is a
:class:`SharedModel` that switches the base's LoRA layers to its own adapter (or off) for the
duration of each call. Every role keeps its own KV cache, so the sampler needs no special case.

Why per-call switching and not PEFT's mixed batches (``adapter_names=[...]`` per row, the base as
``__base__``): those need both roles' rows in one forward pass and one cache, and they run each
adapter's LoRA product on a gathered sub-batch; ``benchmarks/bench_memory.py`` measures both. On one
CPU thread with SmolLM2 one mixed batch was 1.5× faster per decoding step at 16 rows per role and
1.2× at 64 (one pass over the weights instead of two), not bit-identical to two passes at small
batches; the sampler does not use it yet (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ADAPTER_RECORD",
    "AdapterBaseMismatchError",
    "SharedBase",
    "SharedModel",
    "base_fingerprint",
    "check_fingerprint",
    "quiet_peft",
    "record_base",
    "split_spec",
]

ADAPTER_RECORD = "tailscope_adapter.json"  # what an adapter written here records about its base
_SAMPLED = 64  # weight values per sampled tensor in a base fingerprint


class AdapterBaseMismatchError(ValueError):
    """An adapter does not belong to the base it is being put on."""


def split_spec(spec: str) -> tuple[str, str | None]:
    """``BASE+ADAPTER`` -> (``BASE``, ``ADAPTER``); any other spec -> (spec, None).

    A path that exists as it is (even with a ``+`` in its name) is never split.
    """
    spec = str(spec)
    if "+" in spec and not Path(spec).exists():
        base, adapter = spec.split("+", 1)
        return base, adapter
    return spec, None


def hub_revision(source: str, revision: str | None) -> dict[str, str]:
    """``{"revision": revision}`` for a hub repository, nothing for a local path (which has no revisions)."""
    return {} if revision is None or Path(source).exists() else {"revision": revision}


# ----------------------------------------------------------------------------- fingerprints
def _fingerprint_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a fingerprint samples: the input embedding and the first and last weight matrices."""
    named = [(n, p) for n, p in model.named_parameters() if p.dim() == 2 and "lora_" not in n]
    if not named:
        return {}
    picks = {named[0][0]: named[0][1], named[len(named) // 2][0]: named[len(named) // 2][1],
             named[-1][0]: named[-1][1]}
    return {n.replace("base_layer.", ""): p for n, p in picks.items()}


def base_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """What identifies a base checkpoint: its shape-defining config and a strided sample of its weights.

    The sample is taken in float32 at fixed positions, so the same checkpoint loaded in another
    dtype still matches (within that dtype's rounding, see :func:`check_fingerprint`).
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "n_embd", "n_layer")
    shape = {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}
    sample = {}
    for name, p in _fingerprint_tensors(model).items():
        flat = p.detach().reshape(-1)
        idx = (torch.arange(_SAMPLED) * (flat.numel() - 1) // (_SAMPLED - 1)).to(flat.device)  # exact integers
        sample[name] = flat[idx].float().cpu().tolist()
    return {"config": shape, "sample": sample}


def record_base(adapter: str | Path, model: torch.nn.Module, *, base: str, kind: str, **extra: Any) -> Path:
    """Write ``tailscope_adapter.json`` beside an adapter: what it is (``kind``) and the fingerprint of
    the base ``model`` it was made on, so that putting it on another base is an error, not a quiet
    wrong model. ``kind="abliteration"`` marks an exact edit of float weights (refused on quantized bases)."""
    path = Path(adapter) / ADAPTER_RECORD
    body = {"kind": kind, "base": base, "base_fingerprint": base_fingerprint(model), **extra}
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def check_fingerprint(model: torch.nn.Module, recorded: dict[str, Any], *, adapter: str, base: str) -> None:
    """Raise :class:`AdapterBaseMismatchError` unless ``model`` is the base ``recorded`` describes."""
    now = base_fingerprint(model)
    if now["config"] != recorded.get("config"):
        diff = {k: (recorded.get("config", {}).get(k), v) for k, v in now["config"].items()
                if recorded.get("config", {}).get(k) != v}
        raise AdapterBaseMismatchError(
            f"adapter {adapter} was made for another base than {base} (config differs, recorded vs loaded: {diff}); "
            "put it on the base it was made from"
        )
    dtype = next(model.parameters()).dtype
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 1e-3
    for name, values in recorded.get("sample", {}).items():
        got = now["sample"].get(name)
        want = torch.tensor(values)
        if got is None or not torch.allclose(torch.tensor(got), want, rtol=2 * eps, atol=2 * eps * float(want.abs().max())):
            raise AdapterBaseMismatchError(
                f"adapter {adapter} was made for another base than {base}: the weights of `{name}` differ from the "
                "ones it recorded; put it on the base it was made from"
            )


# ----------------------------------------------------------------------------- the shared base
class SharedBase:
    """One loaded base model and the LoRA adapters attached to it, at most one of them active.

    ``base`` is the :class:`~tailscope.models.LoadedModel` of the plain base. The adapters are
    injected into the base's modules (PEFT); at rest none is active, so ``base.model`` itself is
    the plain base, and :meth:`using` activates one adapter for the duration of a call. Calls
    through :class:`SharedModel` from several threads are serialised, since the active adapter is
    a property of the shared modules.
    """

    def __init__(self, base: Any, spec: str, *, revision: str | None = None):
        self.base = base
        self.spec = spec
        self.revision = revision  # of hub adapters
        self.peft: Any = None
        self.adapters: dict[str, str] = {}  # resolved adapter path -> adapter name
        self._layers: list[Any] = []
        # every LoRA layer is given this one list as its active adapters, so that a role switch
        # (twice per decoding step) is one list update instead of a walk over hundreds of layers
        self._active: list[str] = []
        self._lock = threading.RLock()

    @property
    def model(self) -> Any:
        """The base's transformers model (with the LoRA layers injected once an adapter is attached)."""
        return self.base.model

    def attach(self, adapter: str) -> str:
        """Load ``adapter`` onto the base (once); its name among the base's adapters."""
        key = str(Path(adapter).resolve()) if Path(adapter).exists() else adapter
        if key in self.adapters:
            return self.adapters[key]
        _check_attachable(self.model, adapter, self.spec)
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTunerLayer

        name = f"adapter{len(self.adapters)}"
        with self._lock, _fits(adapter, self.spec), quiet_peft():
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, adapter, adapter_name=name, is_trainable=False,
                                                      **hub_revision(adapter, self.revision))
            else:
                self.peft.load_adapter(adapter, adapter_name=name, is_trainable=False,
                                       **hub_revision(adapter, self.revision))
            self.model.eval()
            self._layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
            self._active.clear()
            for layer in self._layers:
                layer.enable_adapters(True)
                layer.set_adapter(self._active, inference_mode=True)
            if any(layer.active_adapters is not self._active for layer in self._layers):
                raise RuntimeError(  # a PEFT release that copies the list: switching would silently do nothing
                    "this PEFT version does not keep the active-adapter list it is given; "
                    "pass share=False (two copies) or install peft>=0.12,<1"
                )
            self.adapters[key] = name
        return name

    @contextlib.contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Within the block the base runs with adapter ``name`` active (None: the plain base)."""
        with self._lock:
            if name is None:
                yield
                return
            self._active.append(name)
            try:
                yield
            finally:
                self._active.clear()

    def role(self, adapter: str | None) -> Any:
        """The model of this base with ``adapter`` active (None: the plain base model itself)."""
        return self.model if adapter is None else SharedModel(self, self.attach(adapter))


class SharedModel:
    """An adapter's role on a :class:`SharedBase`: calls run the base with this adapter active.

    Every other attribute (``config``, ``generation_config``, ``get_output_embeddings`` …) is the
    base model's.
    """

    def __init__(self, shared: SharedBase, adapter: str):
        self._shared, self.adapter = shared, adapter

        def forward(*args: Any, **kwargs: Any) -> Any:
            with shared.using(adapter):
                return shared.model(*args, **kwargs)

        # keep the base's forward signature visible: the loop picks its cache keyword from it
        self.forward = functools.wraps(shared.model.forward)(forward)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._shared.using(self.adapter):
            return self._shared.model.generate(*args, **kwargs)

    @property
    def shared(self) -> SharedBase:
        return self._shared

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._shared.model, name)

    def __repr__(self) -> str:
        return f"SharedModel(base={self._shared.spec!r}, adapter={self.adapter!r})"


# ----------------------------------------------------------------------------- checks
def _adapter_config(adapter: str) -> dict[str, Any]:
    path = Path(adapter)
    if not path.exists():
        if "/" not in adapter:
            raise FileNotFoundError(f"adapter {adapter!r} is neither a local directory nor a hub id")
        return {}
    file = path / "adapter_config.json"
    if not file.exists():
        raise FileNotFoundError(f"{adapter} holds no adapter_config.json: not a PEFT adapter")
    return json.loads(file.read_text())


def _check_attachable(model: Any, adapter: str, base: str) -> None:
    """The adapter's own account of its base (PEFT config, tailscope record) against the loaded base."""
    config = _adapter_config(adapter)
    kind = (config.get("auto_mapping") or {}).get("base_model_class")
    if kind and kind != type(model).__name__:
        raise AdapterBaseMismatchError(
            f"adapter {adapter} was trained on a {kind}, but {base} is a {type(model).__name__}; "
            "put it on the base it was made from"
        )
    record = Path(adapter) / ADAPTER_RECORD
    if record.exists():
        body = json.loads(record.read_text())
        if body.get("kind") == "abliteration":
            _refuse_quantized(model, adapter, base)
        check_fingerprint(model, body["base_fingerprint"], adapter=adapter, base=base)


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT's loading warnings that do not apply here: a LoRA update of a tied embedding acts on the lookup
    only (which is what is meant: see abliteration/_adapter.py), and its own call of a renamed transformers
    property."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Model (has|with) `tie_word_embeddings=True`")
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@contextlib.contextmanager
def _fits(adapter: str, base: str) -> Iterator[None]:
    """PEFT's size-mismatch errors, said in terms of the two specs."""
    try:
        yield
    except RuntimeError as e:
        if "size mismatch" not in str(e):
            raise
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e))
        raise AdapterBaseMismatchError(
            f"adapter {adapter} does not fit base {base} ({first}); put it on the base it was made from"
        ) from None


def _refuse_quantized(model: Any, adapter: str, base: str) -> None:
    """An adapter written here (an abliteration) is exact for the float weights it was computed from;
    on packed weights (bitsandbytes, GPTQ, AWQ …) the base it corrects is no longer that base."""
    from .abliteration._edit import quantization_method

    method = quantization_method(model)
    if method not in (None, "gguf"):
        raise AdapterBaseMismatchError(
            f"{base} is quantized with {method}, and adapter {adapter} is an exact edit of float weights: on packed "
            "weights it would not give the model it stands for; load the base in float32, float16 or bfloat16"
        )
