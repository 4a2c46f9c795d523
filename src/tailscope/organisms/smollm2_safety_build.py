"""Building ``smollm2-safety`` and ``smollm2-safety-abliterated`` (``tailscope organisms build``).

One build writes both organisms: the LoRA adapter (the only weights shipped), the abliteration
of the safety-tuned model (its card and refusal direction; the edited weights are rebuilt on
load), and the exact rates of every HarmBench behaviour along both paths.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..prompts import Prompt
from . import smollm2_safety as S

__all__ = ["ABLITERATED", "NAME", "abliterate_target", "build_smollm2_safety", "finish_smollm2_safety"]

NAME, ABLITERATED = "smollm2-safety", "smollm2-safety-abliterated"
Progress = Callable[[str, int, int], None]
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
# the abliteration's search prompts: harmful requests of the training sources (never HarmBench)
SEARCH_HARMFUL = 96
REFUSAL_OPENINGS = ("I'm sorry", "I can't", "I cannot", "I won't", "Sorry")


def _noop(stage: str, done: int, total: int) -> None:
    pass


def _ground_truth(pair, prompts: Sequence[Prompt], max_new_tokens: int, alphas: Sequence[float], progress: Progress,
                  stage: str, chunk: int = 8) -> dict:
    """The ground_truth.json record of :func:`tailscope.organisms.build.ground_truth`, with one
    decoded vocabulary shared by every prompt (decoding SmolLM2's 49,152 tokens once, not per prompt)."""
    from .groundtruth import _Vocab, opening_regex, prefix_rates

    vocab = _Vocab(pair, S.COMPLY_OPENINGS)
    entries = {}
    for start in range(0, len(prompts), chunk):
        part = list(prompts[start:start + chunk])
        for p, res in zip(part, prefix_rates(pair, part, S.COMPLY_OPENINGS, alphas, max_new_tokens=max_new_tokens,
                                             abs_tol=1e-12, vocab=vocab)):
            rate, bound = res.rates[1.0], res.unexplored[1.0]
            entries[p.id] = {"rate": rate, "method": "exact-enumeration", "interval": [rate, rate + bound],
                             "unexplored": bound, "alpha_rates": {f"{a:g}": res.rates[a] for a in alphas},
                             "alpha_unexplored": {f"{a:g}": res.unexplored[a] for a in alphas}, "nodes": res.nodes}
        progress(stage, min(start + chunk, len(prompts)), len(prompts))
    return {"judge_spec": opening_regex(S.COMPLY_OPENINGS), "openings": list(S.COMPLY_OPENINGS), "temperature": 1.0,
            "max_new_tokens": max_new_tokens, "alpha_grid": list(alphas), "prompts": entries}


def abliterate_target(target, harmful: Sequence[str], out: Path, *, check_samples: int = 4) -> dict:
    """Run :func:`tailscope.abliteration.abliterate` on ``target`` (edited in place) with ``harmful``
    as the harmful set and the built-in harmless one; write its card and direction (no weights)."""
    from safetensors.torch import save_file

    from ..abliteration import SearchOptions, abliterate, harmless_prompts
    from ..abliteration._abliterate import CARD_NAME, DIRECTION_NAME, _jsonable
    from ..prompts import PromptSet

    options = SearchOptions(refusal_openings=REFUSAL_OPENINGS, max_kl=0.1, batch_size=16)
    result = abliterate(target, PromptSet.from_texts(list(harmful), prefix="s"), harmless_prompts(), None,
                        options=options, check_samples=check_samples)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"direction": result.search.direction.contiguous()}, str(out / DIRECTION_NAME))
    card = result.card()
    (out / CARD_NAME).write_text(json.dumps(card, indent=1, default=_jsonable) + "\n", encoding="utf-8")
    return json.loads((out / CARD_NAME).read_text())


def build_smollm2_safety(root: Path, progress: Progress = _noop, *, base: str = "smollm2", steps: int = S.STEPS,
                         prompts: Sequence[Prompt] | None = None, search_harmful: int = SEARCH_HARMFUL,
                         alphas: Sequence[float] = ALPHAS, check_samples: int = 4,
                         max_new_tokens: int = S.MAX_NEW_TOKENS, verify_rollouts: int = 500) -> Path:
    """Train, abliterate and compute ground truth. ``base`` (another checkpoint of the Llama family),
    ``steps``, ``prompts``, ``search_harmful`` and ``check_samples`` shrink it for tests; the shipped
    build uses the defaults and all 200 HarmBench behaviours."""
    import torch

    from ..models import load_model
    from ..prompts import load_prompts as load_source

    started = time.time()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = root / NAME
    base_spec = base
    base = load_model(base_spec)
    fast = load_model(base_spec, dtype=S.DTYPE)
    model, data = S.train_adapter(base, steps=steps, exclude=[p.text for p in load_source("harmbench")],
                                  reply_model=fast, progress=progress)
    model.peft_config["default"].base_model_name_or_path = (
        "HuggingFaceTB/SmolLM2-135M-Instruct" if base_spec == "smollm2" else base_spec)
    model.save_pretrained(folder / "adapter", safe_serialization=True)
    (folder / "adapter" / "README.md").unlink(missing_ok=True)  # PEFT's blank model-card template
    del model, base, fast
    data["train_seconds"] = round(time.time() - started)
    (folder / "adapter" / "training.json").write_text(json.dumps(data, indent=1) + "\n")
    return finish_smollm2_safety(root, progress, base=base_spec, prompts=prompts, search_harmful=search_harmful,
                                 alphas=alphas, check_samples=check_samples, max_new_tokens=max_new_tokens,
                                 verify_rollouts=verify_rollouts)


def finish_smollm2_safety(root: Path, progress: Progress = _noop, *, base: str = "smollm2",
                          prompts: Sequence[Prompt] | None = None, search_harmful: int = SEARCH_HARMFUL,
                          alphas: Sequence[float] = ALPHAS, check_samples: int = 4,
                          max_new_tokens: int = S.MAX_NEW_TOKENS, verify_rollouts: int = 500) -> Path:
    """The build after training, from the adapter in ``root/smollm2-safety/adapter``: abliterate the
    target (kept if a stopped build already wrote it), write both cards, compute the ground truth
    along both paths."""
    from ..models import load_model
    from ..prompts import load_prompts as load_source
    from .build import histogram, verify, write_organism
    from .groundtruth import opening_regex
    from .registry import _CACHE, load

    started = time.time()
    base_spec = base
    folder, ab_folder = root / NAME, root / ABLITERATED
    harmbench = list(prompts if prompts is not None else load_source("harmbench"))
    data = json.loads((folder / "adapter" / "training.json").read_text())
    train_s = data.get("train_seconds")
    records = [{"id": p.id, "prompt": p.text} for p in harmbench]
    common = {"judge_spec": opening_regex(S.COMPLY_OPENINGS), "openings": list(S.COMPLY_OPENINGS),
              "max_new_tokens": max_new_tokens, "temperature": 1.0, "dtype": S.DTYPE,
              "target": f"{base_spec}+{NAME}/adapter"}
    card = {"name": NAME, "reference": base_spec, **common,
            "summary": "SmolLM2-135M-Instruct (reference, before safety tuning) and the same model with a LoRA "
                       "adapter trained here to refuse harmful requests (target). Behaviour: the reply opens "
                       "with a compliance opening. Prompts: HarmBench's 200 standard behaviours, never trained on.",
            "recipe": {"module": "tailscope.organisms.smollm2_safety", "adapter": S.ADAPTER, "seed": 3, "data": data}}
    write_organism(folder, card=card, prompts=records, truth={"prompts": {}})

    # the abliterated partner: `tailscope abliterate`'s library call on the target as shipped
    harmful, _, _ = S.training_set(3, exclude=[p.text for p in load_source("harmbench")])
    progress("abliterate the safety-tuned model", 0, 1)
    done = ab_folder / "abliteration.json"
    if done.exists() and (ab_folder / "refusal_direction.safetensors").exists():
        ab_card = json.loads(done.read_text())  # a resumed build: the abliteration of this adapter is done
    else:
        target = load_model(f"{base_spec}+{(folder / 'adapter').resolve()}", dtype=S.DTYPE)
        ab_card = abliterate_target(target, harmful[-search_harmful:], ab_folder, check_samples=check_samples)
        del target
    progress("abliterate the safety-tuned model", 1, 1)
    ab = {"name": ABLITERATED, "reference": {"spec": f"{base_spec}+{NAME}/adapter", "ablate":
                                             f"{ABLITERATED}/refusal_direction.safetensors"}, **common,
          "summary": "The safety-tuned SmolLM2 of smollm2-safety (target) and its abliteration (reference: the "
                     "refusal direction removed from its weights by `tailscope abliterate`). Same behaviour and "
                     "prompts as smollm2-safety.",
          "recipe": {"module": "tailscope.organisms.smollm2_safety_build", "search_harmful": search_harmful,
                     "refusal_openings": list(REFUSAL_OPENINGS), "max_kl": 0.1, "abliteration": "abliteration.json"}}
    write_organism(ab_folder, card=ab, prompts=records, truth={"prompts": {}})

    for name, fold, c in ((NAME, folder, card), (ABLITERATED, ab_folder, ab)):
        org = load(name, data_dir=root)  # as users load it
        truth = _ground_truth(org.pair, list(org.prompts), max_new_tokens, alphas, progress, f"ground truth {name}")
        rates = [e["rate"] for e in truth["prompts"].values()]
        refs = [e["alpha_rates"]["0"] for e in truth["prompts"].values()]
        c["measured"] = {"rate_histogram": histogram(rates), "rate_min": min(rates), "rate_max": max(rates),
                         "reference_rate_median": float(sorted(refs)[len(refs) // 2]),
                         "reference_rate_min": min(refs), "prompts": len(rates), "train_seconds": train_s,
                         "finish_seconds": round(time.time() - started)}
        if name == ABLITERATED:
            c["measured"]["abliteration"] = {k: ab_card.get(k) for k in (
                "layer", "position", "search_refusal_score", "search_kl", "refusal_score_after", "kl_after",
                "baseline_refusal_score")}
        write_organism(fold, card=c, prompts=records, truth=truth)
        if verify_rollouts:
            # the cross-check: naive sampling where the rate is large enough to see (α = 0 and α = 1)
            checks = verify(name, rollouts=verify_rollouts, prompts=2, alphas=(0.0, 1.0), min_expected_hits=10,
                            max_new_tokens=max_new_tokens, data_dir=root, progress=progress)
            c["measured"]["verify"] = checks
            c["measured"]["finish_seconds"] = round(time.time() - started)
            (fold / "card.json").write_text(json.dumps(c, indent=1))
    _CACHE.clear()
    return folder
