"""Abliteration end to end: find the refusal direction, edit the weights, measure, save (METHODS.md §4).

The saved directory is a normal transformers checkpoint (safetensors, config, generation config,
tokenizer) that :func:`tailscope.models.load_model` reads, plus ``abliteration.json`` (what was
done and measured) and ``refusal_direction.safetensors`` (the unit direction removed). With
``as_adapter=True`` it is a PEFT LoRA adapter of the base instead (:mod:`._adapter`), loaded as
``BASE+DIR``, so that the abliterated reference and its target share one copy of the base.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..prompts import Prompt
from ._activations import first_token_logprobs
from ._edit import WeightEdit, orthogonalize_weights, quantization_method
from ._scoring import SampledCheck, harmless_kl, sampled_check
from ._search import DirectionSearch, SearchOptions, find_refusal_direction, refusal_score

__all__ = ["CARD_NAME", "AbliterationResult", "abliterate", "save_abliterated"]

CARD_NAME = "abliteration.json"
DIRECTION_NAME = "refusal_direction.safetensors"


@dataclass
class AbliterationResult:
    """What :func:`abliterate` found, changed and measured.

    ``refusal_score`` and ``kl`` are measured on the edited weights (held-out prompts); ``edit`` is
    None for a dry run. ``checks`` holds the sampled judge checks ``before`` and ``after`` the edit.
    """

    source: str
    search: DirectionSearch
    edit: WeightEdit | None
    refusal_score: float | None
    kl: float | None
    norm_preserving: bool
    checks: dict[str, SampledCheck]
    out: Path | None = None
    as_adapter: bool = False
    adapter: Any = None  # the PEFT model holding the adapter, with as_adapter

    def card(self) -> dict[str, Any]:
        """The ``abliteration.json`` card."""
        card: dict[str, Any] = {
            "method": "refusal-direction abliteration (Arditi et al. 2024; tailscope METHODS.md §4)",
            "source_model": self.source,
            "dry_run": self.edit is None,
            "norm_preserving": self.norm_preserving,
            "form": "lora-adapter" if self.as_adapter else "checkpoint",
            **self.search.to_dict(),
            "edited": None,
            "checks": {k: v.to_dict() for k, v in self.checks.items()},
        }
        card["search_refusal_score"] = card.pop("refusal_score")
        card["search_kl"] = card.pop("kl")
        card["refusal_score_after"] = self.refusal_score
        card["kl_after"] = self.kl
        if self.edit is not None:
            card["edited"] = {
                "modules": list(self.edit.edited),
                "untied_lm_head": self.edit.untied,
                "note": ("the LM head shared its weight with the token embedding; it was given its own "
                         "copy of the original weight before the embedding was edited, so the unembedding "
                         "is unchanged (tie_word_embeddings is now false)") if self.edit.untied else "",
                "approximate": self.edit.approximate,
            }
            if self.as_adapter:
                card["edited"]["lora_rank_per_matrix"] = 1
        return card


def abliterate(
    lm,
    harmful: Sequence[Prompt],
    harmless: Sequence[Prompt],
    out: str | Path | None = None,
    *,
    options: SearchOptions | None = None,
    norm_preserving: bool = False,
    dry_run: bool = False,
    check_samples: int = 0,
    check_judge: str = "refusal",
    check_max_new_tokens: int = 32,
    progress: Callable[[int, int], None] | None = None,
    as_adapter: bool = False,
) -> AbliterationResult:
    """Build the less-safe variant of ``lm`` by removing its refusal direction from the weights.

    The weights of ``lm.model`` are edited in place, one matrix at a time (no copy of the model).

    Args:
        lm: a :class:`~tailscope.models.LoadedModel` of a supported family.
        harmful, harmless: prompt sets; a held-out part of each judges the candidates.
        out: where to save the checkpoint (None: do not save).
        options: the direction search (:class:`SearchOptions`: ``layer``, ``projected``, ``max_kl`` …).
        norm_preserving: keep the norm of every edited residual vector.
        dry_run: find and score the candidates only; the weights are not touched and nothing is saved.
        check_samples: replies sampled per held-out harmful prompt before and after the edit and
            read by ``check_judge`` (0: no sampled check).
        check_judge: the judge spec of the sampled check; ``refusal`` flags non-refusals.
        check_max_new_tokens: reply length of the sampled check.
        progress: called with (candidates done, candidates in all).
        as_adapter: write the edit as a rank-1-per-matrix PEFT LoRA adapter of ``lm`` instead of an
            edited checkpoint; the base weights are not touched, and ``lm.model`` runs with the
            adapter active afterwards (``result.adapter.unload()`` takes it out).
    """
    search = find_refusal_direction(lm, harmful, harmless, options, progress=progress)
    opts = search.options
    result = AbliterationResult(lm.name, search, None, None, None, norm_preserving, {}, as_adapter=as_adapter)
    if dry_run:
        return result
    if as_adapter:  # refuse before the checks spend any time (norm-preserving, biases, quantized weights)
        from ._adapter import _refuse
        from ._arch import residual_layout

        _refuse(lm.model, residual_layout(lm.model).writers, norm_preserving)

    def check(label: str) -> None:
        if check_samples > 0:
            result.checks[label] = sampled_check(lm, search.heldout_harmful, check_samples, judge=check_judge,
                                                 max_new_tokens=check_max_new_tokens, seed=opts.seed, chat=opts.chat)

    check("before")
    if as_adapter:
        from ._adapter import abliteration_adapter
        from ._arch import residual_layout

        layout = residual_layout(lm.model)
        result.adapter = abliteration_adapter(lm.model, search.direction)
        result.edit = WeightEdit(tuple(w.name for w in layout.writers), False, False, layout.approximate)
    else:
        result.edit = orthogonalize_weights(lm.model, search.direction, norm_preserving=norm_preserving)
    result.refusal_score = refusal_score(lm.model, lm.tokenizer, search.heldout_harmful, opts)
    safe = first_token_logprobs(lm.model, lm.tokenizer, search.heldout_harmless, batch_size=opts.batch_size,
                                chat=opts.chat)
    result.kl = harmless_kl(search.baseline_harmless_logprobs, safe)
    check("after")
    if out is not None:
        result.out = save_abliterated(lm, out, result)
    return result


def save_abliterated(lm, out: str | Path, result: AbliterationResult) -> Path:
    """Save the edited model as a checkpoint directory (or, with ``as_adapter``, the adapter) with its card and direction."""
    from safetensors.torch import save_file

    if result.edit is None:
        raise ValueError("a dry run edits nothing; there is no checkpoint to save")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory for the checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    if result.as_adapter:
        from ._adapter import save_adapter

        save_adapter(result.adapter, out, base=lm.name, record={"direction_file": DIRECTION_NAME})
        save_file({"direction": result.search.direction.contiguous()}, str(out / DIRECTION_NAME))
        (out / CARD_NAME).write_text(json.dumps(result.card(), indent=2, default=_jsonable) + "\n", encoding="utf-8")
        return out
    if quantization_method(lm.model) == "gguf":
        # transformers dequantized the GGUF file on load; the edited weights are plain floats, saved as such
        lm.model.hf_quantizer = None
        for config in {id(c): c for c in (lm.model.config, lm.model.config.get_text_config())}.values():
            if hasattr(config, "quantization_config"):
                del config.quantization_config
    lm.model.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    save_file({"direction": result.search.direction.contiguous()}, str(out / DIRECTION_NAME))
    (out / CARD_NAME).write_text(json.dumps(result.card(), indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
