"""Batch sizes that fit the device: the path sampler's ``batch_size="auto"``.

* **The start.** On CUDA, as many rows as fit in :data:`MEMORY_SHARE` of the device's free memory
  (``torch.cuda.mem_get_info``, read after the models are loaded), at :func:`row_bytes` a row; on
  the CPU and MPS, :data:`AUTO_CPU_ROWS` rows (their free memory says little about speed: past a
  few dozen rows a CPU gains nothing), fewer if system memory is short. Never more than
  :data:`AUTO_MAX_ROWS`.
* **Out of memory.** A batch that runs out of memory (:func:`is_out_of_memory`) is dropped whole,
  the batch size halved, and the same requests drawn again in smaller batches: a rollout is a pure
  function of its seed, so nothing is skipped, nothing counted twice, and the rollouts equal those
  of a run at the smaller size from the start. At one row, :class:`OutOfMemoryAtOneRowError`.

:func:`check_memory_limit` lets a caller give a batch fewer bytes than the device has (another job
shares the GPU, say): a batch whose KV caches need more raises ``torch.OutOfMemoryError`` exactly
as a full device would, and the same backing off follows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .devices import free_memory

__all__ = ["AUTO_CPU_ROWS", "AUTO_MAX_ROWS", "MEMORY_SHARE", "PROMPT_TOKENS", "OutOfMemoryAtOneRowError",
           "auto_batch_size", "cache_bytes", "check_memory_limit", "is_out_of_memory", "kv_bytes_per_token",
           "row_bytes"]

AUTO_CPU_ROWS = 64
AUTO_MAX_ROWS = 256
MEMORY_SHARE = 0.8  # of the free memory: the allocator's fragmentation and the step's temporaries take the rest
PROMPT_TOKENS = 256  # prompt length a row is planned for; longer prompts are what the backing off is for


class OutOfMemoryAtOneRowError(RuntimeError):
    """Even one row does not fit: a shorter reply, a smaller dtype or a second device is needed."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device running out of memory (CUDA, MPS or the CPU allocator)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def kv_bytes_per_token(model: Any) -> int:
    """Bytes one position of one row takes in ``model``'s KV cache (keys and values of every layer)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    itemsize = next(model.parameters()).element_size()
    return 2 * int(config.num_hidden_layers) * kv_heads * head_dim * itemsize


def row_bytes(pair: Any, tokens: int) -> int:
    """What one row of a batch needs at most: both models' KV caches over ``tokens`` positions, the
    prefill's logits over the prompt (in the worst case a prompt per row) and the step's float32 and
    float64 vectors over the vocabulary (both models' logits, their log-softmax, the proposal, the CDF)."""
    kv = (kv_bytes_per_token(pair.reference.model) + kv_bytes_per_token(pair.target.model)) * tokens  # a cache each
    itemsize = next(pair.target.model.parameters()).element_size()
    prefill = PROMPT_TOKENS * pair.target.logit_dim * itemsize
    step = 48 * pair.vocab_size
    return kv + prefill + step


def auto_batch_size(pair: Any, max_new_tokens: int, *, free: int | None = None) -> int:
    """The starting batch size of ``batch_size="auto"`` (see the module docstring). ``free``
    overrides the device's free bytes, and then the CPU cap (``AUTO_CPU_ROWS``) is not applied
    either: the caller has said how much memory there is."""
    device = pair.device
    per_row = row_bytes(pair, PROMPT_TOKENS + max_new_tokens)
    rows = int(MEMORY_SHARE * (free if free is not None else free_memory(device)) // per_row)
    if device.type != "cuda" and free is None:
        rows = min(rows, AUTO_CPU_ROWS)
    return max(1, min(AUTO_MAX_ROWS, rows))


def cache_bytes(caches: Iterable[Any]) -> int:
    """Bytes held by KV caches' keys and values (a preallocated layer counts its whole buffer)."""
    total = 0
    for cache in caches:
        for layer in getattr(cache, "layers", ()):
            for name in ("_kbuf", "_vbuf") if hasattr(layer, "_kbuf") else ("keys", "values"):
                tensor = getattr(layer, name, None)
                if isinstance(tensor, torch.Tensor):
                    total += tensor.numel() * tensor.element_size()
    return total


def check_memory_limit(caches: Iterable[Any], limit: int, rows: int) -> None:
    """Raise ``torch.OutOfMemoryError`` when a batch's KV caches hold more than ``limit`` bytes."""
    used = cache_bytes(caches)
    if used > limit:
        raise torch.OutOfMemoryError(f"out of memory: a batch of {rows} rows needs {used:,} bytes of KV cache, "
                                     f"over the memory limit of {limit:,} bytes")
