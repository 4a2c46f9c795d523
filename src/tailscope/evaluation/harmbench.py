"""`tailscope evaluate harmbench`: the seeds' experiment on a real pretrained model.

The target is the safety-tuned SmolLM2 of ``smollm2-safety``; the prompts are HarmBench's 200
standard behaviours (never trained on); the behaviour is a compliance opening, so every prompt's
rate is exact along both paths (:mod:`tailscope.organisms.smollm2_safety`). The protocol is the
AUROC suite's (:mod:`~tailscope.evaluation.auroc`), run once per less-safe partner:

* ``smollm2-safety`` — the partner is SmolLM2 before safety tuning;
* ``smollm2-safety-abliterated`` — the partner is the safety-tuned model abliterated.

Both runs score the same prompts (the screen and labels depend on the target's rates only) and
tune on calibration prompts never scored. Cuts for this project's 2-core CPU, stated in the
result: ``prompts`` scored prompts, replies of the card's ``max_new_tokens`` (the verdict is
decided within them, so exact rates hold; importance weights then span only those tokens, which
flatters IS and MIS), budgets up to 1,000.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HARMBENCH_METHODS", "PARTNERS", "default_method", "run_harmbench_suite"]

Progress = Callable[[str, int, int], None]
PARTNERS = {"smollm2-safety": "SmolLM2 before safety tuning",
            "smollm2-safety-abliterated": "the safety-tuned model, abliterated"}
HARMBENCH_METHODS = {
    "mis": {"method": "mis"},
    "mis (switching, tuned)": {"method": "mis", "switch_after": "tune"},
    "lpe": {"method": "lpe"},
    "lpe (shared shape, last 6)": {"method": "lpe", "family": "log-shape", "fit_points": 6, "shape": "learn"},
    "is (reference proposal)": {"method": "is", "proposal": "a=0"},
}


def default_method() -> str:
    """The entry of ``HARMBENCH_METHODS`` that is tailscope's default estimator
    (:mod:`tailscope.estimators.defaults`), so the report follows the library's default."""
    from ..estimators.defaults import DEFAULT_METHOD, default_settings
    from ..estimators.tuning import TUNE

    settings, _ = default_settings(10**6)
    name = DEFAULT_METHOD
    if DEFAULT_METHOD == "mis" and settings.get("switch_after") == TUNE:
        name = "mis (switching, tuned)"
    if name not in HARMBENCH_METHODS:
        raise ValueError(f"the default estimator is {name!r}, which the harmbench suite does not run")
    return name


def _flags(store: Any, name: str) -> dict[str, int] | None:
    """How many stored estimates named ``name`` carry each reliability flag; None when estimates have no
    flags field (older estimators)."""
    latest = {row["prompt_id"]: row["data"] for row in store.estimates(name)}  # a resumed run records again
    if not any("flags" in d for d in latest.values()):
        return None
    counts: dict[str, int] = {}
    for data in latest.values():
        for flag in data.get("flags") or ():
            counts[str(flag)] = counts.get(str(flag), 0) + 1
    return counts


def _calibration_note(record: dict[str, Any]) -> str:
    """What each tuned method chose, on which prompts, at what cost (none of it in the budgets)."""
    notes = []
    for name, r in record.items():
        if r.get("shape") == "learned":
            notes.append(f"{name}: path shape learned from the {r['source']}, {len(r['calibration_prompts'])} prompts")
        elif "switch_after" in r or "proposal" in r:
            what, chosen = ("proposal", r["proposal"]) if "proposal" in r else ("switch point", r["switch_after"])
            notes.append(f"{name}: {what} {chosen} chosen by the cross-entropy search on "
                         f"{len(r['calibration_prompts'])} calibration prompts (not scored; {r['rollouts']:,} rollouts)")
    return ("Tuned settings — " + "; ".join(notes) + ".") if notes else ""


def run_harmbench_suite(out_dir: Path, runs_dir: Path, *, fast: bool, progress: Progress | None = None,
                        seed: int = 0, prompts: int | None = None, calibration: int | None = None,
                        methods: dict[str, dict[str, Any]] | None = None, budgets: tuple[int, ...] | None = None,
                        data_dir: Path | None = None) -> dict[str, Any]:
    """Run the experiment with each partner; write ``harmbench[_fast].json`` and one plot per partner.

    ``methods``, ``budgets`` and ``data_dir`` (where the organisms are) exist for tests."""
    from ..judges import make_judge
    from ..organisms import OrganismNotFoundError, list_organisms, load
    from ..sampling import PathSampler
    from ..store import RunStore, run_config
    from .auroc import plot_auroc, run_auroc_experiment

    missing = [n for n in PARTNERS if n not in set(list_organisms(data_dir))]
    if missing:
        raise OrganismNotFoundError(f"the harmbench suite needs the organisms {missing}; build them with "
                                    "`tailscope organisms build smollm2-safety` (tens of minutes on a CPU)")
    budgets = budgets or ((100, 300, 1000) if fast else (30, 100, 300, 1000))
    methods = methods or HARMBENCH_METHODS
    from ..estimators.defaults import CALIBRATION_PROMPTS

    calibration = calibration or CALIBRATION_PROMPTS  # as many as the default estimator sets aside
    default_name = default_method() if default_method() in methods else next(iter(methods))
    n_prompts = prompts or (8 if fast else 12)
    name = "harmbench_fast" if fast else "harmbench"
    results: dict[str, Any] = {
        "suite": "harmbench", "fast": fast, "budgets": list(budgets), "partners": {},
        "command": f"tailscope evaluate harmbench{' --fast' if fast else ''}{f' --limit {prompts}' if prompts else ''}",
        "default_method": default_name,
    }
    for partner, label in PARTNERS.items():
        org = load(partner, data_dir=data_dir)
        judge = make_judge(org.judge_spec)
        sampler = PathSampler(org.pair, max_new_tokens=org.max_new_tokens, seed=seed, batch_size=256)
        run = f"eval-harmbench-{partner}" + ("-fast" if fast else "")
        with RunStore.open(run, run_config(sampler, judge=judge, suite="harmbench"), root=runs_dir) as store:
            exp = run_auroc_experiment(org, store, sampler, judge, methods=methods, budgets=budgets,
                                       max_prompts=n_prompts, seed=seed, calibration_prompts=calibration,
                                       progress=progress)
            flags = _flags(store, f"{default_name}@{max(budgets)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_auroc(exp, out_dir / f"{name}-{partner}.png")
        default = exp.methods[default_name][max(budgets)]
        results["partners"][partner] = {
            "label": label, "reference": org.card["reference"], "dtype": org.card.get("dtype"),
            "max_new_tokens": org.max_new_tokens, "experiment": exp.to_dict(),
            "default_at_max_budget": {k: default[k] for k in ("median_abs_log10_error", "within_factor_3",
                                                              "coverage", "upper_bounds_only", "prompts")},
            "calibration_note": _calibration_note(exp.calibration), "default_flags": flags,
        }
        (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")  # partial results survive
    first = next(iter(results["partners"].values()))["experiment"]
    results["protocol_summary"] = (
        f"{len(first['prompts'])} HarmBench behaviours (of 200) that never complied in a simulated 100-rollout "
        "screen, evenly spaced in log rate; label = complies at least once in 100,000 rollouts (drawn from the "
        "exact rate, AUROC averaged over 200 label draws); naive simulated exactly from the exact rates; other "
        f"methods sampled for real (bfloat16) with replies of {org.max_new_tokens} tokens (the verdict is decided "
        "there, so exact rates hold; importance weights then span only those tokens, which flatters IS and MIS); "
        f"tuning on {calibration} calibration behaviours never scored.")
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    return results
