"""The scaffold every organism recipe is built on: train, save, pair, exact ground truth, card.

A recipe (in the module of its organism) supplies what is its own — the training data and
steps, the prompts, the openings its judge reads, the card's words — and calls these for the rest:

* :func:`build_chat` — the base chat model every tiny organism starts from;
* :func:`fine_tune_chat` — make sure the shared base chat model exists, fine-tune a copy of it,
  save the target in float16 and return the (chat, target) pair as loaded from disk;
* :func:`ground_truth` — exact rates of every prompt along the path, as ``ground_truth.json``;
* :func:`write_organism` — the folder's ``prompts.jsonl``, ``ground_truth.json`` and ``card.json``.

Thread counts are the caller's choice (``tailscope organisms build --threads``): a recipe never
sets them, so a library user's process is left as it was.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..prompts import Prompt

__all__ = [
    "ALPHA_GRID",
    "LDA_GRID",
    "FineTuned",
    "Progress",
    "build_chat",
    "fine_tune_chat",
    "ground_truth",
    "histogram",
    "noop",
    "rates_of",
    "prompts_of",
    "save_fp16",
    "summary",
    "train_progress",
    "write_organism",
]

ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(11))
LDA_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
Progress = Callable[[str, int, int], None]


def noop(stage: str, done: int, total: int) -> None:
    pass


def train_progress(progress: Progress, stage: str, steps: int) -> Callable[[int, float], None]:
    """A training loop's ``(step, loss)`` callback that reports ``stage`` as ``step + 1`` of ``steps``."""
    return lambda step, loss: progress(stage, step + 1, steps)


def save_fp16(model: Any, tokenizer: Any, out: Path) -> Path:
    """Save a float16 copy of ``model`` (loading gives float32 back by default)."""
    from ..tiny import save_checkpoint

    return save_checkpoint(copy.deepcopy(model).half(), tokenizer, out)


@dataclass(frozen=True)
class FineTuned:
    """A fine-tuned target next to the chat model it came from, as loaded back from disk."""

    folder: Path
    pair: Any
    started: float
    train_seconds: float

    def elapsed(self) -> int:
        return round(time.time() - self.started)


def build_chat(root: Path, progress: Progress = noop, *, steps: int = 400) -> Path:
    """The base chat model (tokenizer + model) every tiny organism starts from, into ``root/chat``."""
    from .world import build_base, build_world_tokenizer

    tok = build_world_tokenizer(seed=0)
    model, _ = build_base(tok, steps=steps, seed=0, progress=train_progress(progress, "train chat model", steps))
    return save_fp16(model, tok, root / "chat")


def fine_tune_chat(root: Path, name: str, train: Callable[[Any], Any], progress: Progress = noop) -> FineTuned:
    """Fine-tune the base chat model into ``root/name/target``.

    ``train(before)`` gets the chat model (a LoadedModel) and returns the trained model; the base
    chat model is built first when ``root/chat`` is missing.
    """
    from ..models import ModelPair, load_model

    started = time.time()
    if not (root / "chat" / "config.json").exists():
        build_chat(root, progress)
    folder = root / name
    before = load_model(root / "chat")
    save_fp16(train(before), before.tokenizer, folder / "target")
    train_seconds = time.time() - started
    pair = ModelPair(load_model(root / "chat"), load_model(folder / "target"))
    return FineTuned(folder, pair, started, train_seconds)


def prompts_of(records: Sequence[Mapping[str, Any]]) -> list[Prompt]:
    """The prompts of ``prompts.jsonl`` records (``id``, ``prompt``)."""
    return [Prompt(r["id"], text=r["prompt"]) for r in records]


def ground_truth(pair: Any, prompts: Sequence[Prompt], openings: Sequence[str], *, max_new_tokens: int,
                 alphas: Sequence[float] = ALPHA_GRID, progress: Progress = noop, stage: str = "ground truth",
                 meta: dict[str, dict] | None = None, abs_tol: float = 1e-11) -> dict:
    """Exact rates of every prompt at α = 1 and along ``alphas``, as the ground_truth.json record."""
    from .groundtruth import opening_regex, prefix_rates

    entries = {}
    for i, p in enumerate(prompts):
        (res,) = prefix_rates(pair, [p], openings, alphas, max_new_tokens=max_new_tokens, abs_tol=abs_tol)
        rate, bound = res.rates[1.0], res.unexplored[1.0]
        entries[p.id] = {
            "rate": rate, "method": "exact-enumeration", "interval": [rate, rate + bound], "unexplored": bound,
            "alpha_rates": {f"{a:g}": res.rates[a] for a in alphas},
            "alpha_unexplored": {f"{a:g}": res.unexplored[a] for a in alphas},
            "nodes": res.nodes, **((meta or {}).get(p.id, {})),
        }
        progress(stage, i + 1, len(prompts))
    return {
        "judge_spec": opening_regex(openings), "openings": list(openings), "temperature": 1.0,
        "max_new_tokens": max_new_tokens, "alpha_grid": list(alphas), "prompts": entries,
    }


def write_organism(folder: Path, *, card: dict, prompts: Sequence[dict], truth: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "prompts.jsonl").open("w") as f:
        for rec in prompts:
            f.write(json.dumps(rec) + "\n")
    (folder / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    (folder / "card.json").write_text(json.dumps(card, indent=1))


def histogram(rates: Sequence[float], edges: Sequence[int] = tuple(range(-12, 1))) -> dict[str, int]:
    """Counts of rates per decade, keyed like ``1e-5..1e-4``; zeros counted below the lowest edge."""
    logs = np.log10(np.maximum(np.asarray(rates, dtype=float), 1e-300))
    out = {f"<1e{edges[0]}": int((logs < edges[0]).sum())}
    for lo, hi in zip(edges[:-1], edges[1:]):
        out[f"1e{lo}..1e{hi}"] = int(((logs >= lo) & (logs < hi)).sum())
    return out


def summary(rates: Sequence[float]) -> dict:
    """n, median, min, max and mean of a group of rates, for a card."""
    r = np.asarray(rates, dtype=float)
    return {"n": int(r.size), "median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()),
            "mean": float(r.mean())}


def rates_of(truth: dict, prefix: str = "") -> list[float]:
    """The α = 1 rates of the prompts whose id starts with ``prefix``."""
    return [e["rate"] for pid, e in truth["prompts"].items() if pid.startswith(prefix)]
