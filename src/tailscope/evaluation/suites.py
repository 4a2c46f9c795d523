"""The evaluation suites behind `tailscope evaluate SUITE`: each writes JSON, PNG plots and HTML.

* ``auroc`` — the LPE experiment (AUROC vs budget, rollout savings) and estimation error vs budget,
  on the ``refusal`` organism.
* ``map`` — which method wins as reply length and reference/target drift grow, on the refusal
  organism's drift variants.
* ``harmbench`` — the same experiment on a real pretrained model: the safety-tuned SmolLM2 of
  ``smollm2-safety`` on HarmBench, with each of its less-safe partners.
* ``detection`` — logit diff amplification on ``contamination`` and ``backdoor`` (rate vs
  amplification) and on ``checkpoints`` (earliest checkpoint detected, with and without LDA).

All rollouts go through run stores under ``runs_dir``: a suite stopped at any point resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SUITES", "run_auroc_suite", "run_detection_suite", "run_map_suite"]

Progress = Callable[[str, int, int], None]

AUROC_METHODS_FULL = {
    "lpe": {"method": "lpe"},
    "lpe (log-linear, last 3)": {"method": "lpe", "family": "log-linear", "fit_points": 3},
    "lpe (log-linear, all points)": {"method": "lpe", "family": "log-linear", "fit_points": None},
    "lpe (logit-quadratic, last 5)": {"method": "lpe", "family": "logit-quadratic"},
    "lpe (shared shape, last 6)": {"method": "lpe", "family": "log-shape", "fit_points": 6, "shape": "learn"},
    "mis": {"method": "mis"},
    "mis (switching, tuned)": {"method": "mis", "switch_after": "tune"},
    "is (reference proposal)": {"method": "is", "proposal": "a=0"},
}
IS_TUNED = {"method": "is", "proposal": "tune"}
# the LPE variants above share one walk (only the fit differs), so they cost no extra rollouts
AUROC_METHODS_FAST = {
    **{k: AUROC_METHODS_FULL[k] for k in ("lpe", "lpe (log-linear, last 3)", "lpe (shared shape, last 6)")},
    "lpe (adaptive walk)": {"method": "lpe", "schedule": "adaptive"},
    **{k: AUROC_METHODS_FULL[k] for k in ("mis", "mis (switching, tuned)", "is (reference proposal)")},
    "is (tuned proposal)": IS_TUNED,  # in the fast run only: the full run fits in an hour here without it
}


def _store(name: str, sampler, judge, runs_dir: Path, **extra):
    from ..store import RunStore, run_config

    return RunStore.open(name, run_config(sampler, judge=judge, **extra), root=runs_dir)


def run_auroc_suite(out_dir: Path, runs_dir: Path, *, fast: bool, progress: Progress | None = None,
                    organism_name: str = "refusal", seed: int = 0, max_new_tokens: int | None = None,
                    reference: str | None = None, distribute: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """The LPE experiment. ``max_new_tokens`` cuts replies short (the fast suite cuts them at 24):
    the organisms' verdicts and exact rates are unchanged (the judge reads the opening), but the
    importance weights then span only those tokens, which flatters IS and MIS; the results say so.

    ``reference`` replaces the organism's reference (α = 0) by another checkpoint of the same
    tokenizer, e.g. an abliterated copy of the target: the truth at α = 1 is unchanged, the path is
    not. Outputs and the run store then carry the reference's folder name."""
    from ..judges import make_judge
    from ..organisms import load
    from ..report import write_report
    from ..sampling import PathSampler
    from .auroc import plot_auroc, run_auroc_experiment

    org = load(organism_name)
    pair, tag = org.pair, ""
    if reference is not None:
        from ..models import ModelPair, load_model

        pair = ModelPair(load_model(reference), org.pair.target)
        tag = "-ref-" + Path(reference).resolve().name
    judge = make_judge(org.judge_spec)
    tokens = max_new_tokens or (24 if fast else org.max_new_tokens)
    sampler = PathSampler(pair, max_new_tokens=tokens, seed=seed, batch_size=256)
    if distribute is not None:  # Ray workers (tailscope.scale) when given
        sampler = distribute(sampler)
    budgets = (100, 300, 1000) if fast else (30, 100, 300, 1000)
    methods = AUROC_METHODS_FAST if fast else AUROC_METHODS_FULL
    # the full run: 32 prompts at full reply length (~100–120 tokens), about an hour on one core here
    max_prompts = 16 if fast else 32
    run = f"eval-auroc-{organism_name}{tag}" + ("-fast" if fast else "")  # the two differ in reply length
    with _store(run, sampler, judge, runs_dir, suite="auroc") as store:
        exp = run_auroc_experiment(org, store, sampler, judge, methods=methods, budgets=budgets,
                                   max_prompts=max_prompts, seed=seed, progress=progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = ("auroc_fast" if fast else "auroc") + tag
        plot_auroc(exp, out_dir / f"{name}.png")
        ests = []
        from ..estimators import Estimate

        for row in store.estimates():
            if row["name"].startswith("lpe@") or row["name"].startswith("mis@"):
                if row["name"].endswith(f"@{max(budgets)}"):
                    ests.append(Estimate.from_dict(row["data"]))
        write_report(ests, out_dir / f"{name}_report", title=f"{organism_name}: estimates at budget {max(budgets)}",
                     truth={k: float(v["rate"]) for k, v in org.ground_truth.items()},
                     alpha_truth=None if reference else {k: v.get("alpha_rates", {}) for k, v in org.ground_truth.items()})
    data = {
        "suite": "auroc", "organism": organism_name, "fast": fast, "budgets": list(budgets),
        "reference": reference or org.card["reference"],
        "command": f"tailscope evaluate auroc{' --fast' if fast else ''}"
                   + (f" --reference {reference}" if reference else ""),
        "protocol_summary": (f"{len(exp.prompts)} prompts that never complied in a simulated 100-rollout screen; "
                             "label = complies at least once in 100,000 rollouts (drawn from the exact rate, "
                             "AUROC averaged over 200 label draws); naive simulated exactly from the exact rates; "
                             f"other methods sampled for real with replies of at most {tokens} tokens"
                             + (" (cut short: verdicts and exact rates unchanged, but importance weights span only "
                                "those tokens, which flatters IS and MIS)." if tokens < org.max_new_tokens else ".")
                             + _calibration_note(exp.calibration)),
        "experiment": exp.to_dict(),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def _calibration_note(record: dict[str, Any]) -> str:
    """One sentence per tuned method: what was chosen, on how many calibration prompts, at what cost."""
    notes = []
    for name, r in record.items():
        if r.get("shape") == "learned":
            notes.append(f"{name}: path shape learned from the {r['source']}, {len(r['calibration_prompts'])} prompts")
            continue
        chosen = r.get("proposal", r.get("switch_after"))
        what = "proposal" if "proposal" in r else "switch point"
        notes.append(f"{name}: {what} {chosen} chosen by the cross-entropy search on {len(r['calibration_prompts'])} "
                     f"calibration prompts (not scored; {r['rollouts']:,} rollouts, not in the budgets)")
    return (" Tuned settings — " + "; ".join(notes) + ".") if notes else ""


def run_detection_suite(out_dir: Path, runs_dir: Path, *, fast: bool, progress: Progress | None = None,
                        seed: int = 0, distribute: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    from ..estimators import StoreSource
    from ..judges import make_judge
    from ..organisms import list_organisms, load
    from ..sampling import PathSampler
    from .detection import amplification_curve, checkpoint_monitoring

    have = set(list_organisms())
    amps = (0.0, 0.3, 1.0, 2.0) if fast else (0.0, 0.3, 1.0, 2.0, 4.0)
    n = 100 if fast else 500
    limit = 6 if fast else 20
    results: dict[str, Any] = {"suite": "detection", "fast": fast, "organisms": [],
                               "command": f"tailscope evaluate detection{' --fast' if fast else ''}"}
    for name in ("contamination", "backdoor"):
        if name not in have:
            continue
        org = load(name)
        judge = make_judge(org.judge_spec)
        sampler = PathSampler(org.pair, max_new_tokens=min(48, org.max_new_tokens), seed=seed, batch_size=256)
        with _store(f"eval-detection-{name}", sampler, judge, runs_dir, suite="detection") as store:
            tick = (lambda k, _n=name: progress(f"LDA {_n}", k, 0)) if progress else None
            drawing = distribute(sampler) if distribute is not None else sampler  # Ray workers when given
            curve = amplification_curve(org, amps, n, source=StoreSource(store, drawing, judge, tick), prompt_limit=limit)
        results["organisms"].append(curve)
    if "checkpoints" in have:
        org = load("checkpoints")
        results["checkpoints"] = checkpoint_monitoring(org, 1.0, 200 if fast else 1000,
                                                       judge=make_judge(org.judge_spec), seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "detection_fast" if fast else "detection"
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    _plot_detection(results, out_dir / f"{name}.png")
    return results


def _plot_detection(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results["organisms"]:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, org in enumerate(results["organisms"]):
        xs = [p["amplification"] for p in org["points"]]
        ys = [max(p["rate"], 1e-7) for p in org["points"]]
        lo = [max(p["interval"][0], 1e-7) for p in org["points"]]
        hi = [p["interval"][1] for p in org["points"]]
        ax.errorbar(xs, ys, yerr=[np.subtract(ys, lo), np.subtract(hi, ys)], fmt="-o", color=f"C{i}", ms=4,
                    capsize=2, label=f"{org['name']} (sampled)")
        ax.axhline(org["exact_rate_after"], color=f"C{i}", ls=":", lw=1, label=f"{org['name']} exact rate at a=0")
    ax.set_yscale("log")
    ax.set_xlabel("amplification a (α = 1 + a)")
    ax.set_ylabel("behaviour rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)

def run_map_suite(out_dir: Path, runs_dir: Path, *, fast: bool, progress: Progress | None = None,
                  seed: int = 0, distribute: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Error of IS, MIS and LPE as reply length and drift grow, on the refusal organism's variants."""
    from ..organisms import OrganismNotFoundError, list_organisms
    from .drift_map import MAP_VARIANTS, plot_map, run_map

    variants = [v for v in MAP_VARIANTS if v in set(list_organisms())]
    if not variants:
        raise OrganismNotFoundError(f"the map needs the organisms {list(MAP_VARIANTS)}; build them with "
                                    "`tailscope organisms build NAME`")
    lengths = (16, 256) if fast else (16, 64, 256)
    prompts = 6 if fast else 12
    result = run_map(variants, lengths, runs_dir=runs_dir, prompts=prompts, budget=1000, seed=seed,
                     progress=progress, distribute=distribute)
    name = "map_fast" if fast else "map"
    result.update({"suite": "map", "fast": fast, "command": f"tailscope evaluate map{' --fast' if fast else ''}",
                   "protocol_summary": (f"{prompts} prompts per variant with exact rates in 1e-6..1e-4 (evenly "
                                        "spaced in log rate), 1,000 rollouts per prompt and method, replies cut at "
                                        f"{', '.join(map(str, lengths))} tokens (the verdict is decided by the "
                                        "opening, so the exact rate holds at every length). MIS's switch point is "
                                        "tuned per cell by the cross-entropy search on 4 calibration prompts (not "
                                        "scored); LPE's shared shape is learned from the exact path points "
                                        "(α ≤ 0.9, never the target's rate) of each variant's unscored prompts, "
                                        "standing in for a generous calibration budget.")})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_map(result, out_dir / f"{name}.png")
    return result


def calibration_design(fast: bool, seed: int = 0) -> dict[str, Any]:
    """The scored runs' prompts, seeds and budgets: the fast run scores every other of 10 prompts
    spread in log rate (5), the full run all of 20."""
    if fast:
        return {"prompts": 10, "every": 2, "seeds": (seed, seed + 1), "budgets": (300, 1000)}
    return {"prompts": 20, "every": 1, "seeds": tuple(range(seed, seed + 3)), "budgets": (100, 300, 1000)}


def run_calibration_suite(out_dir: Path, runs_dir: Path, *, fast: bool, progress: Progress | None = None,
                          seed: int = 0, organism_name: str = "refusal", split: str = "scored") -> dict[str, Any]:
    """Interval coverage per method and budget, several seeds per prompt (:mod:`.coverage`).

    ``split="tuning"`` runs the same protocol on prompts neither scored run ever scores (20 of
    them, 10 with ``fast``): the intervals' widenings (path MIS's unseen tail, LPE's trend error)
    are chosen there (``benchmarks/tune_intervals.py``), never on the scored prompts.

    Replies are cut at 16 tokens: the organisms' judges read the opening (4–6 tokens), so every
    verdict and exact rate is unchanged, and switching MIS with a switch point ≤ 16 has exactly the
    weights of full replies (the tokens after the switch carry a ratio of 1). Plain IS and MIS
    weigh every token, so for them the cut flatters: their weights span 16 tokens, not ~100."""
    from ..organisms import load
    from .coverage import in_range, run_calibration
    from .metrics import evenly_in_log_rate

    if split not in ("scored", "tuning"):
        raise ValueError(f"`split` (={split!r}) must be 'scored' or 'tuning'")
    tokens = 16
    design = calibration_design(fast, seed)
    exclude: list[str] = []
    if split == "tuning":
        rates = in_range(load(organism_name))
        for f in (True, False):  # every prompt either scored run scores
            d = calibration_design(f, seed)
            exclude += evenly_in_log_rate(rates, d["prompts"])[:: d["every"]]
        design = {**design, "every": 1, "budgets": (300, 1000)}  # the scored runs' count, all of them scored
    result = run_calibration(organism_name, runs_dir=runs_dir, prompts=design["prompts"], seeds=design["seeds"],
                             budgets=design["budgets"], max_new_tokens=tokens, tune_once=fast, every=design["every"],
                             exclude=exclude, progress=progress)
    name = "calibration" + ("_tuning" if split == "tuning" else "") + ("_fast" if fast else "")
    flags = " --split tuning" if split == "tuning" else ""
    seeds = design["seeds"]
    result.update({
        "suite": "calibration", "fast": fast, "split": split,
        "command": f"tailscope evaluate calibration{' --fast' if fast else ''}{flags}",
        "protocol_summary": (
            f"{len(result['prompts'])} prompts of `{organism_name}` with exact rates in 1e-8..1e-3 (evenly spaced in "
            "log rate"
            f"{'; none of them scored by the scored runs' if split == 'tuning' else ''}) × "
            f"{len(seeds)} sampler seeds; nominal 95% intervals; naive simulated exactly (200 Binomial draws per "
            f"prompt); the default's switch point tuned "
            f"{'once (first seed)' if fast else 'per seed'} on 4 calibration prompts (not scored); replies cut "
            f"at {tokens} tokens (verdicts, exact rates and switching MIS's weights unchanged; plain IS and MIS "
            f"weigh only those {tokens} tokens instead of ~100, which flatters them)."),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_harmbench_suite(out_dir: Path, runs_dir: Path, *, fast: bool, progress: Progress | None = None,
                        seed: int = 0, prompts: int | None = None) -> dict[str, Any]:
    """The experiment on a real pretrained model (see :mod:`tailscope.evaluation.harmbench`)."""
    from .harmbench import run_harmbench_suite as run

    return run(out_dir, runs_dir, fast=fast, progress=progress, seed=seed, prompts=prompts)


SUITES = {"auroc": run_auroc_suite, "calibration": run_calibration_suite, "detection": run_detection_suite,
          "harmbench": run_harmbench_suite, "map": run_map_suite}
