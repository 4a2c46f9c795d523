"""Loading shipped organisms: ``load(name)`` gives the model pair, prompts and ground truth.

An organism lives in ``organisms/data/<name>/``: ``card.json`` (what it is, how it was built, the
measured drift and reply lengths, where its two checkpoints are), ``prompts.jsonl`` and
``ground_truth.json``. Checkpoint paths in the card are relative to ``organisms/data/`` so that
organisms can share weights (the base chat model is the reference of several).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import LoadedModel, ModelPair, SharedBases, load_model
from ..prompts import PromptSet, load_prompts

__all__ = ["DATA_DIR", "Organism", "OrganismNotFoundError", "list_organisms", "load"]

DATA_DIR = Path(__file__).parent / "data"


class OrganismNotFoundError(LookupError):
    """No organism of that name is shipped (or built) here."""


@dataclass
class Organism:
    """A reference/target pair with a planted rare behaviour and its true rate per prompt.

    ``ground_truth[prompt_id]`` holds ``rate`` (at α = 1, temperature 1, ``max_new_tokens``,
    judged by ``judge_spec``), ``method``, ``interval`` and, for exact enumeration, ``alpha_rates``
    (the rate at each α of a grid along the logit path) and ``unexplored`` (certified bound).
    """

    name: str
    pair: ModelPair
    prompts: PromptSet
    ground_truth: dict[str, dict[str, Any]]
    judge_spec: str
    max_new_tokens: int
    card: dict[str, Any]
    path: Path
    checkpoints: list[str] = field(default_factory=list)

    @property
    def openings(self) -> tuple[str, ...]:
        """The literal openings the judge looks for."""
        return tuple(self.card["openings"])

    def rate(self, prompt_id: str, alpha: float = 1.0) -> float:
        """The true rate of one prompt at path point ``alpha`` (α = 1 unless a grid point is asked for)."""
        entry = self.ground_truth[prompt_id]
        if alpha == 1.0:
            return float(entry["rate"])
        rates = entry.get("alpha_rates", {})
        key = f"{alpha:g}"
        if key not in rates:
            raise KeyError(f"no ground truth at α={alpha:g} for {prompt_id!r}; the grid is {sorted(rates)}")
        return float(rates[key])

    def load_checkpoint(self, name: str, *, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
        """One of the organism's extra checkpoints (see ``checkpoints``), e.g. ``step-040``."""
        if name not in self.checkpoints:
            raise KeyError(f"organism {self.name!r} has no checkpoint {name!r}; it has {self.checkpoints}")
        return load_model(self.path / "checkpoints" / name, device=device, dtype=dtype)


def list_organisms(data_dir: Path | None = None) -> list[str]:
    """Names of the organisms present (each a folder with a ``card.json``)."""
    root = data_dir or DATA_DIR
    return sorted(p.parent.name for p in root.glob("*/card.json"))


_CACHE: dict[tuple[str, str, str, str | None], tuple[LoadedModel, ...]] = {}
# one copy of each base per (device, dtype): a BASE+ADAPTER checkpoint runs on it with its adapter active
_BASES: dict[tuple[str, str], SharedBases] = {}
BUNDLED = ("smollm2",)  # model specs a card may name that are not folders under the data directory


def resolve_spec(spec: str, root: Path) -> str:
    """A card's checkpoint entry as a :func:`~tailscope.models.load_model` spec: a folder relative to
    ``root``, a bundled model (``smollm2``), or ``BASE+ADAPTER`` with each part resolved the same way."""
    if spec in BUNDLED:
        return spec
    if "+" in spec and not (root / spec).exists():
        base, adapter = spec.split("+", 1)
        return f"{resolve_spec(base, root)}+{(root / adapter).resolve()}"
    return str((root / spec).resolve())


def _model(spec: str, device: str, dtype: str, ablate: str | None = None) -> LoadedModel:
    """A model of a card, cached per process; with ``ablate`` (a ``refusal_direction.safetensors``
    written by abliteration) the direction is removed from a fresh copy's weights (METHODS.md §4),
    which is how an abliterated partner ships without its full weights."""
    key = (spec, device, dtype, ablate)
    if key not in _CACHE:
        if ablate is None:
            bases = _BASES.setdefault((device, dtype), SharedBases(device=device, dtype=dtype))
            lm = bases.load(spec)
        else:  # edited in place, so a copy of its own, never the shared base
            from safetensors.torch import load_file

            from ..abliteration import orthogonalize_weights

            lm = load_model(spec, device=device, dtype=dtype)
            orthogonalize_weights(lm.model, load_file(ablate)["direction"])
            lm = LoadedModel(lm.model, lm.tokenizer, f"{spec} abliterated ({Path(ablate).parent.name})", lm.device)
        _CACHE[key] = (lm,)
    return _CACHE[key][0]


def _card_model(entry: str | dict, root: Path, device: str, dtype: str) -> LoadedModel:
    """A card's ``reference``/``target``: a spec, or ``{"spec": SPEC, "ablate": DIRECTION_FILE}``."""
    if isinstance(entry, dict):
        return _model(resolve_spec(entry["spec"], root), device, dtype, str((root / entry["ablate"]).resolve()))
    return _model(resolve_spec(entry, root), device, dtype)


def load(name: str, *, device: str = "cpu", dtype: str | None = None, data_dir: Path | None = None) -> Organism:
    """Load a shipped organism by name (see :func:`list_organisms`).

    Weights are stored in float16 and loaded as ``dtype``; by default the card's ``dtype`` (float32
    unless the card says otherwise), which is what the ground truth was computed with. Loaded
    models are cached per process, so organisms that share a checkpoint share one model object; do
    not train them in place.
    """
    root = data_dir or DATA_DIR
    folder = root / name
    if not (folder / "card.json").exists():
        raise OrganismNotFoundError(
            f"no organism {name!r} in {root} (have: {', '.join(list_organisms(root)) or 'none'}); "
            f"build it with `tailscope organisms build {name}`"
        )
    card = json.loads((folder / "card.json").read_text())
    dtype = dtype or card.get("dtype", "float32")
    reference = _card_model(card["reference"], root, device, dtype)
    target = _card_model(card["target"], root, device, dtype)
    truth = json.loads((folder / "ground_truth.json").read_text())
    ckpt_dir = folder / "checkpoints"
    checkpoints = sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir()) if ckpt_dir.exists() else []
    return Organism(
        name=name, pair=ModelPair(reference, target), prompts=load_prompts(folder / "prompts.jsonl"),
        ground_truth=truth["prompts"], judge_spec=card["judge_spec"], max_new_tokens=int(card["max_new_tokens"]),
        card=card, path=folder, checkpoints=checkpoints,
    )
