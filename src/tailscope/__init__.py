"""tailscope: find and measure the rare behaviours of language models.

The public API, re-exported lazily so that ``import tailscope`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LoadedModel": "models",
    "ModelPair": "models",
    "TokenizerMismatchError": "models",
    "load_model": "models",
    "NonFiniteLogitsError": "path",
    "Proposal": "path",
    "PathSampler": "sampling",
    "Rollout": "sampling",
    "SampleRequest": "sampling",
    "Prompt": "prompts",
    "PromptSet": "prompts",
    "load_prompts": "prompts",
    "Estimate": "estimators",
    "estimate": "estimators",
    "Judge": "judges",
    "Verdict": "judges",
    "make_judge": "judges",
    "RunStore": "store",
    "run_config": "store",
    "Scorer": "scoring",
    "lda_sweep": "lda",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'tailscope' has no attribute {name!r}")
