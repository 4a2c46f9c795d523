"""The shipped benchmark: three small models and the registered distributions over their
tokenizer (built by :mod:`tailscope.lowprob.recipe`, stored under ``lowprob/data/``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tailscope.lowprob.distributions import DISTRIBUTIONS, InputDistribution, build_distribution

__all__ = ["DATA_DIR", "load_counts", "load_distribution", "load_model", "load_tokenizer", "model_names"]

DATA_DIR = Path(__file__).parent / "data"


def _data(data_dir: str | Path | None) -> Path:
    root = Path(data_dir) if data_dir else DATA_DIR
    if not (root / "tokenizer").is_dir():
        raise FileNotFoundError(f"no benchmark data in {root}: run `tailscope lowprob build-models --out {root}`")
    return root


def model_names(data_dir: str | Path | None = None) -> list[str]:
    """Names of the models present in the data directory."""
    return sorted(p.name for p in (_data(data_dir) / "models").iterdir() if (p / "config.json").exists())


def load_tokenizer(data_dir: str | Path | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_data(data_dir) / "tokenizer")


def load_counts(data_dir: str | Path | None = None) -> list[int]:
    """The token-frequency table of the training corpus."""
    return json.loads((_data(data_dir) / "token_counts.json").read_text())["counts"]


def load_model(name: str, data_dir: str | Path | None = None, *, dtype: torch.dtype = torch.float32):
    """Load benchmark model ``name`` (e.g. "L1") as a float32 transformers model."""
    from transformers import AutoModelForCausalLM

    path = _data(data_dir) / "models" / name
    if not (path / "config.json").exists():
        raise KeyError(f"unknown benchmark model {name!r}; present: {model_names(data_dir)}")
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def load_distribution(name: str, data_dir: str | Path | None = None, tokenizer=None) -> InputDistribution:
    """Build registered distribution ``name`` over the benchmark tokenizer."""
    if name not in DISTRIBUTIONS:
        raise KeyError(f"unknown distribution {name!r}; registered: {sorted(DISTRIBUTIONS)}")
    return build_distribution(name, tokenizer or load_tokenizer(data_dir), load_counts(data_dir))
