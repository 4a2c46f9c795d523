"""Compare LPE's fit families and schedules on the refusal organisms' exact path rates.

LPE reads nothing from a rollout but the judge's verdict, so its input at a path point α is a
Binomial(n, r(α)) hit count. The organisms store r(α) exactly on the grid 0, 0.1, …, 0.9, so
LPE's whole behaviour — walk, fit, bootstrap interval — can be simulated exactly from those
rates, for many prompts and seeds, at no sampling cost (METHODS.md §5 does the same for naive
sampling). Every prompt of each variant with a true rate between 1e-6 and 1e-4 is scored; each
(variant, configuration, budget) reports the median |log10(estimate/truth)|, the share within a
factor of 3 and the interval coverage.

    python benchmarks/lpe_families.py            # writes benchmarks/results/lpe_families.json
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tailscope.estimators import lpe
from tailscope.evaluation.calibration import learn_path_shape
from tailscope.organisms import list_organisms, load
from tailscope.prompts import Prompt

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "log-quadratic, last 5 (default)": {},
    "log-quadratic, last 4": {"fit_points": 4},
    "log-quadratic, last 6": {"fit_points": 6},
    "log-quadratic, all points": {"fit_points": None},
    "logit-quadratic, last 5": {"family": "logit-quadratic"},
    "log-linear, last 3 (previous default)": {"family": "log-linear", "fit_points": 3},
    "log-linear, all points": {"family": "log-linear", "fit_points": None},
    "log-quadratic, last 5, adaptive walk": {"schedule": "adaptive"},
    # the shape is learned per variant on the path points (α ≤ 0.9) of the prompts NOT scored here
    "shared shape, last 6": {"family": "log-shape", "fit_points": 6, "shape": "learn"},
}
BUDGETS = (100, 300, 1000, 3000)
VARIANTS = ("refusal-lowdrift", "refusal", "refusal-highdrift")


class ExactPathSource:
    """Judged rollouts at grid points, drawn as Bernoulli(r(α)) verdicts from exact rates; rollouts
    at one α are nested across calls (seed index i is the same verdict every time), as in a store."""

    def __init__(self, alpha_rates: dict[str, float], seed: int):
        self.rates = alpha_rates
        self.rng = np.random.default_rng(seed)
        self.drawn: dict[float, list] = {}

    def draw(self, prompt, proposal, n, grid=()):
        alpha = round(float(proposal.alpha), 10)
        have = self.drawn.setdefault(alpha, [])
        if len(have) < n:
            rate = self.rates[f"{alpha:g}"]
            have += [SimpleNamespace(flagged=bool(u < rate), rollout=None) for u in self.rng.random(n - len(have))]
        return have[:n]


def main() -> None:
    started = time.time()
    results, shapes = [], {}
    for name in [v for v in VARIANTS if v in list_organisms()]:
        org = load(name)
        ids = [pid for pid, e in org.ground_truth.items() if 1e-6 <= e["rate"] < 1e-4]
        shape, calibration = learn_path_shape(org, scored=ids)
        shapes[name] = calibration
        for label, cfg in CONFIGS.items():
            cfg = {**cfg, "shape": shape} if cfg.get("shape") == "learn" else cfg
            for budget in BUDGETS:
                errs, cover, within = [], [], []
                for i, pid in enumerate(ids):
                    e = lpe(ExactPathSource(org.ground_truth[pid]["alpha_rates"], seed=i), Prompt(pid, text=""),
                            budget, bootstrap=200, **cfg)
                    truth = org.rate(pid)
                    cover.append(e.interval[0] <= truth <= e.interval[1])
                    ok = e.rate > 0 and not e.upper_bound_only
                    err = abs(math.log10(e.rate / truth)) if ok else math.inf
                    errs.append(err)
                    within.append(err <= math.log10(3))
                shown = {k: v for k, v in cfg.items() if k != "shape"} | ({"shape": "learned"} if "shape" in cfg else {})
                results.append({"variant": name, "config": label, "settings": shown, "budget": budget,
                                "prompts": len(ids), "median_abs_log10_error": float(np.median(errs)),
                                "within_factor_3": float(np.mean(within)), "coverage": float(np.mean(cover))})
            row = [r for r in results if r["variant"] == name and r["config"] == label]
            print(f"{name:18s} {label:40s} " + "  ".join(f"{r['budget']}: {r['median_abs_log10_error']:.2f}" for r in row),
                  file=sys.stderr)
    out = {"benchmark": "lpe_families", "command": "python benchmarks/lpe_families.py",
           "protocol": "LPE on exact Binomial(n, r(α)) hit counts from each refusal variant's exact path rates; "
                       "every prompt with a true rate in 1e-6..1e-4, one seed per prompt, 200 bootstrap draws. "
                       "The shared shape is learned per variant from the exact path points (α ≤ 0.9, never the "
                       "target's rate) of that variant's other prompts whose rate at α = 0.9 is in 1e-5..1e-3.",
           "shape_calibration_prompts": {k: len(v) for k, v in shapes.items()},
           "budgets": list(BUDGETS), "configs": list(CONFIGS), "results": results,
           "seconds": round(time.time() - started)}
    path = ROOT / "benchmarks" / "results" / "lpe_families.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
