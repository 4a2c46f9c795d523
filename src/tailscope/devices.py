"""Device and dtype choices: ``auto`` for each, and what free memory allows.

* ``device="auto"``: the first CUDA device, else Apple's MPS, else the CPU.
* ``dtype="auto"``: bfloat16 on a CUDA device that computes in it (compute capability 8.0 and
  up: A100, H100, RTX 30xx/40xx …), float16 on older CUDA devices (V100, T4), float32 on MPS and
  the CPU. Two 8B models in float32 need 64 GB; in bfloat16, 32 GB (one shared base: 16 GB).
  bfloat16 moves log q by a measured amount (docs/benchmarks.md, "bfloat16 against float32"); the
  estimators' intervals account for sampling noise, not for that.
"""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "free_memory", "resolve_device", "resolve_dtype"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA, then MPS, then CPU; anything else as torch reads it (an error if it is unavailable)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(f"`device` (={device!r}) must be cpu, cuda, cuda:N, mps or auto") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` (={device!r}) asks for CUDA, but this torch sees no CUDA device; "
                         "use --device cpu or --device auto")
    return chosen


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """A dtype name (or ``auto``, for ``device``) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = resolve_device(device)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` (={dtype!r}) must be one of {sorted(DTYPES) + ['auto']}")
    return DTYPES[dtype]


def free_memory(device: str | torch.device) -> int:
    """Bytes that can still be allocated on ``device``: free CUDA memory, or available system memory."""
    device = resolve_device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        if recommended is not None:
            return int(recommended() - torch.mps.current_allocated_memory())
    try:
        import psutil  # comes with accelerate and peft
    except ImportError:  # free pages only: an underestimate, since the page cache could be reclaimed
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return int(psutil.virtual_memory().available)
