"""Ground truth by brute force: the argmax of the model on many inputs drawn from D, stored as
how often each token was the argmax (METHODS.md §3). Work proceeds in seeded chunks; after each
chunk the counts are written atomically, so a job can be stopped at any time and continued
later with the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.lm import LowProbModel

__all__ = ["GroundTruth", "extend_ground_truth", "ground_truth_path", "load_ground_truth"]


@dataclass
class GroundTruth:
    """Argmax frequencies of one (model, distribution) pair over ``inputs`` draws."""

    model: str
    distribution: str
    seed: int
    chunk_size: int
    chunks: int = 0
    counts: list[int] = field(default_factory=list)

    @property
    def inputs(self) -> int:
        return self.chunks * self.chunk_size

    def probability(self, token: int) -> float:
        return self.counts[token] / self.inputs if self.inputs else float("nan")

    def targets(self, *, min_hits: int = 16, max_probability: float = 1e-3) -> list[int]:
        """Tokens seen at least ``min_hits`` times with a frequency at most ``max_probability``."""
        return [t for t, c in enumerate(self.counts) if c >= min_hits and c / max(self.inputs, 1) <= max_probability]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({**asdict(self), "inputs": self.inputs}))
        os.replace(tmp, path)


def ground_truth_path(root: str | Path, model: str, distribution: str) -> Path:
    return Path(root) / f"{model}__{distribution}.json"


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read a stored ground truth file."""
    data = json.loads(Path(path).read_text())
    data.pop("inputs", None)
    return GroundTruth(**data)


def chunk_generator(seed: int, chunk: int) -> torch.Generator:
    """The generator of chunk ``chunk``: independent of how the work was split into runs."""
    return torch.Generator().manual_seed(seed * 1_000_003 + chunk)


def extend_ground_truth(lm: LowProbModel, dist: InputDistribution, path: str | Path, *, model: str,
                        inputs: int, chunk_size: int = 2**16, seed: int = 0, max_chunks: int | None = None,
                        on_chunk: Callable[[GroundTruth], None] | None = None) -> GroundTruth:
    """Continue (or start) the brute-force count at ``path`` until it covers ``inputs`` draws.

    Args:
        lm: the model.
        dist: the input distribution.
        path: the JSON file holding the counts; created if missing.
        model: the model's name, recorded and checked against an existing file.
        inputs: total draws wanted (rounded up to whole chunks).
        chunk_size: draws per chunk (the unit of saving and of seeding).
        seed: the base seed.
        max_chunks: stop after this many new chunks (for round-robin scheduling).
        on_chunk: called after every saved chunk.
    """
    path = Path(path)
    if path.exists():
        truth = load_ground_truth(path)
        found = (truth.model, truth.distribution, truth.seed, truth.chunk_size)
        if found != (model, dist.name, seed, chunk_size):
            raise ValueError(f"{path} holds (model, distribution, seed, chunk_size) = {found}, not "
                             f"{(model, dist.name, seed, chunk_size)}; use another path or the same settings")
    else:
        truth = GroundTruth(model, dist.name, seed, chunk_size, 0, [0] * lm.vocab_size)
    done = 0
    while truth.inputs < inputs and (max_chunks is None or done < max_chunks):
        x = dist.sample(chunk_size, chunk_generator(seed, truth.chunks))
        counts = torch.bincount(lm.argmax(x), minlength=lm.vocab_size)
        truth.counts = [a + b for a, b in zip(truth.counts, counts.tolist())]
        truth.chunks += 1
        truth.save(path)
        done += 1
        if on_chunk is not None:
            on_chunk(truth)
    return truth
