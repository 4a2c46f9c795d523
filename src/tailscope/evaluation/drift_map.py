"""Which method wins where: estimation error as reply length and reference/target drift grow.

Importance sampling from the reference weighs each rollout by q_1(y)/q_0(y), a product of one
ratio per reply token, so its variance grows with the reply's length times the per-token drift
(METHODS.md §5); the path methods are meant to win where those weights degenerate. The map runs
each method at one budget on the same prompts of the refusal organism's drift variants
(``refusal-lowdrift``, ``refusal``, ``refusal-highdrift``: one recipe, three style tilts), each
sampled with replies cut at several lengths. The behaviour is decided by the reply's opening, so
the exact rate is the same at every length; only the span the weights cover changes.

Protocol (stated in the result file): per variant, ``prompts`` prompts with exact rates between
1e-6 and 1e-4, evenly spaced in log rate; every method gets ``budget`` rollouts per prompt through
a run store per (variant, length), so a stopped run resumes; each cell reports the median
|log10(estimate / truth)| over point estimates, the share within a factor of 3, the interval
coverage, the number of upper-bound-only answers, and, for IS, the median effective sample size.
An upper-bound-only answer counts as a miss in ``within_factor_3_all`` (it gives no estimate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import calibration_split, needs_tuning, resolve_tuned
from .metrics import error_and_coverage, evenly_in_log_rate

__all__ = ["MAP_METHODS", "MAP_VARIANTS", "pick_prompts", "plot_map", "run_map"]

MAP_VARIANTS = ("refusal-lowdrift", "refusal", "refusal-highdrift")
MAP_METHODS = {
    "is (reference proposal)": {"method": "is", "proposal": "a=0"},
    "mis": {"method": "mis"},
    "mis (switching, tuned)": {"method": "mis", "switch_after": "tune"},
    "lpe": {"method": "lpe"},
    "lpe (shared shape, last 6)": {"method": "lpe", "family": "log-shape", "fit_points": 6, "shape": "learn"},
}


def pick_prompts(org, k: int, low: float = 1e-6, high: float = 1e-4) -> list[str]:
    """``k`` prompt ids with exact rates in ``[low, high]``, evenly spaced in log rate."""
    return evenly_in_log_rate({pid: e["rate"] for pid, e in org.ground_truth.items() if low <= e["rate"] <= high}, k)


def run_map(
    variants: Sequence[str],
    lengths: Sequence[int],
    *,
    runs_dir: Path,
    prompts: int,
    budget: int,
    methods: dict[str, dict[str, Any]] = MAP_METHODS,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    distribute: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Run every method on every (variant, length) cell; returns the JSON-ready result."""
    from ..estimators import StoreSource, estimate
    from ..judges import make_judge
    from ..organisms import load
    from ..sampling import PathSampler
    from ..store import RunStore, run_config

    cells = []
    for name in variants:
        org = load(name)
        judge = make_judge(org.judge_spec)
        ids = pick_prompts(org, prompts)
        by_id = {p.id: p for p in org.prompts}
        truths = [org.rate(i) for i in ids]
        measured = org.card.get("measured", {})
        for length in lengths:
            sampler = PathSampler(org.pair, max_new_tokens=length, seed=seed, batch_size=256)
            if distribute is not None:  # Ray workers (tailscope.scale) when given
                sampler = distribute(sampler)
            config = run_config(sampler, judge=judge, suite="map")
            with RunStore.open(f"eval-map-{name}-{length}", config, root=runs_dir) as store:
                source = StoreSource(store, sampler, judge)
                cell_methods, tuned = methods, {}
                if needs_tuning(methods):  # per cell: the switch point depends on the reply length
                    held = calibration_split(org.prompts, ids, 4, seed)
                    if progress:
                        progress(f"{name} · {length} tokens · tuning", 0, 1)
                    cell_methods, tuned = resolve_tuned(methods, source, sampler.scorer(), held, budget,
                                                        organism=org, scored=ids)
                for label, spec in cell_methods.items():
                    spec = dict(spec)
                    method = spec.pop("method")
                    ests = []
                    for j, pid in enumerate(ids):
                        ests.append(estimate(method, source, by_id[pid], budget, **spec))
                        if progress:
                            progress(f"{name} · {length} tokens · {label}", j + 1, len(ids))
                    stats = error_and_coverage(ests, truths)
                    within = [not e.upper_bound_only and e.rate > 0 and abs(math.log10(e.rate / t)) <= math.log10(3)
                              for e, t in zip(ests, truths)]
                    ess = [e.diagnostics.get("ess") for e in ests if e.diagnostics.get("ess") is not None]
                    cells.append({
                        "variant": name, "max_new_tokens": length, "method": label,
                        "style_tilt": org.card.get("recipe", {}).get("style_tilt"),
                        "per_token_kl_harmful": measured.get("harmful", {}).get("per_token_kl"),
                        "per_token_kl_harmless": measured.get("harmless", {}).get("per_token_kl"),
                        **stats, "within_factor_3_all": float(np.mean(within)),
                        "median_ess": float(np.median(ess)) if ess else None,
                        "tuned": {k: v for k, v in tuned.get(label, {}).items() if k != "rounds"},
                        "rollouts_mean": float(np.mean([e.total_rollouts for e in ests])),
                        "estimates": [[e.prompt_id, e.rate, e.interval[0], e.interval[1], int(e.upper_bound_only), t]
                                      for e, t in zip(ests, truths)],
                    })
    return {"variants": list(variants), "lengths": list(lengths), "budget": budget, "prompts_per_variant": prompts,
            "methods": list(methods), "cells": cells}


def plot_map(result: dict[str, Any], out: Path) -> Path:
    """Median |log10 error| vs reply length: one panel per drift variant, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["variants"]
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.4), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], variants):
        cells = [c for c in result["cells"] if c["variant"] == name]
        kl = cells[0]["per_token_kl_harmless"] if cells else None
        for i, method in enumerate(result["methods"]):
            pts = sorted((c["max_new_tokens"], c["median_abs_log10_error"], c["within_factor_3_all"])
                         for c in cells if c["method"] == method)
            xs = [p[0] for p in pts]
            ys = [max(p[1], 0.01) if p[1] is not None else np.nan for p in pts]
            ax.plot(xs, ys, "-o", color=f"C{i}", ms=4, label=method)
        ax.axhline(math.log10(3), color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(result["lengths"], [str(n) for n in result["lengths"]])
        ax.minorticks_off()
        ax.set_xlabel("reply tokens sampled")
        ax.set_title(f"{name}\n(per-token KL {kl:.2f} on harmless replies)" if kl is not None else name, fontsize=9)
    axes[0][0].set_ylabel("median |log10(estimate / truth)| (decades)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"error at {result['budget']} rollouts per prompt; dotted: a factor of 3", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
