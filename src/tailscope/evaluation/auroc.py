"""The LPE experiment on an organism with exact ground truth: AUROC vs rollout budget.

Protocol (stated in every result file):

1. Screen: each prompt's naive 100-rollout screen is simulated from its exact rate (a Binomial(100, p)
   draw, fixed seed); prompts that comply at least once are dropped, as in the seed experiment.
2. Label: a prompt is positive when the target complies at least once in 100,000 rollouts. Labels
   are Bernoulli(1 − (1 − p)^100000) draws; every AUROC is averaged over ``label_draws`` draws.
3. Naive sampling's score is its hit count, a Binomial(n, p) draw: its curve is simulated exactly
   for every budget up to 100,000 (averaged over simulated experiments).
4. The other methods run for real through the run store at each budget; rollouts at a path point
   are nested prefixes across budgets (a smaller budget reuses the first rollouts of a larger one).
   A method's score is its estimate; an estimate that saw no hits scores as its upper bound scaled
   by 1e-6, below every point estimate but still ordered by its bound.
5. Savings: the budget at which a method's AUROC reaches naive's AUROC at 10,000 (and 100,000)
   rollouts, interpolated on log budget; the ratio is naive's budget over the method's.
6. Settings a method asks to tune (``"tune"``, see :mod:`~tailscope.evaluation.calibration`) are
   chosen once, on a calibration split of prompts drawn at random from those not scored; those
   rollouts are recorded in the result, not in the per-prompt budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..estimators import Estimate, StoreSource, estimate
from .calibration import calibration_split, needs_tuning, resolve_tuned
from .metrics import auroc, bootstrap_band, error_and_coverage, evenly_in_log_rate, label_probability, matching_budget

__all__ = ["AurocExperiment", "estimate_score", "run_auroc_experiment"]

NAIVE_BUDGETS = (10, 30, 100, 300, 1000, 3000, 10_000, 30_000, 100_000)


def estimate_score(e: Estimate) -> float:
    """A prompt's ranking score from an estimate (bounds rank below point estimates, by their bound)."""
    return e.rate if not e.upper_bound_only and e.rate > 0 else e.interval[1] * 1e-6


@dataclass
class AurocExperiment:
    prompts: list[str]
    rates: np.ndarray
    labels: np.ndarray  # (label_draws, prompts)
    naive: dict[int, dict[str, float]] = field(default_factory=dict)
    methods: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    def method_auroc(self, scores: np.ndarray) -> float:
        vals = [auroc(scores, y) for y in self.labels]
        return float(np.nanmean(vals))

    def savings(self) -> dict[str, dict[str, float | None]]:
        out = {}
        for reference in (10_000, 100_000):
            level = self.naive[reference]["auroc"]
            for name, by_budget in self.methods.items():
                b = matching_budget({k: v["auroc"] for k, v in by_budget.items()}, level)
                out.setdefault(name, {})[f"budget_matching_naive_{reference}"] = b
                out[name][f"saving_vs_naive_{reference}"] = (reference / b) if b else None
                # matched already at the smallest budget tried: the true saving is at least this
                out[name][f"saving_vs_naive_{reference}_is_lower_bound"] = bool(b) and b <= min(by_budget)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts, "rates": self.rates.tolist(),
            "positives_mean": float(self.labels.mean(1).mean() * len(self.prompts)),
            "naive": {str(k): v for k, v in self.naive.items()},
            "methods": {m: {str(k): v for k, v in d.items()} for m, d in self.methods.items()},
            "savings": self.savings(), "calibration": self.calibration,
        }


def run_auroc_experiment(
    organism: Any,
    store: Any,
    sampler: Any,
    judge: Any,
    *,
    methods: dict[str, dict[str, Any]],
    budgets: Sequence[int],
    max_prompts: int | None = None,
    label_draws: int = 200,
    naive_draws: int = 200,
    seed: int = 0,
    calibration_prompts: int = 4,
    progress: Callable[[str, int, int], None] | None = None,
) -> AurocExperiment:
    """Run the experiment; ``methods`` maps a display name to ``{"method": "lpe", **settings}``."""
    rng = np.random.default_rng(seed)
    ids = list(organism.ground_truth)
    rates = np.array([float(organism.ground_truth[i]["rate"]) for i in ids])
    screened = rng.binomial(100, rates) == 0
    keep = [i for i, s in zip(ids, screened) if s]
    if max_prompts is not None and len(keep) > max_prompts:
        keep = evenly_in_log_rate({i: float(organism.ground_truth[i]["rate"]) for i in keep}, max_prompts)
    kept_rates = np.array([float(organism.ground_truth[i]["rate"]) for i in keep])
    labels = rng.random((label_draws, len(keep))) < label_probability(kept_rates, 100_000)
    exp = AurocExperiment(keep, kept_rates, labels)
    for n in NAIVE_BUDGETS:
        # one simulated naive experiment per label draw: the spread covers both sources of chance
        vals = np.array([auroc(rng.binomial(n, kept_rates), y) for y in labels[:naive_draws]])
        exp.naive[n] = {"auroc": float(np.nanmean(vals)),
                        "band": [float(np.nanquantile(vals, 0.05)), float(np.nanquantile(vals, 0.95))]}
    prompts = {p.id: p for p in organism.prompts}
    source = StoreSource(store, sampler, judge)
    if needs_tuning(methods):
        held = calibration_split(organism.prompts, keep, calibration_prompts, seed)
        if progress:
            progress(f"tuning on {len(held)} calibration prompts", 0, 1)
        methods, exp.calibration = resolve_tuned(methods, source, sampler.scorer(), held, max(budgets),
                                                 organism=organism, scored=keep)
    for name, spec in methods.items():
        spec = dict(spec)
        method = spec.pop("method")
        exp.methods[name] = {}
        for budget in sorted(budgets):
            ests = []
            for j, pid in enumerate(keep):
                ests.append(estimate(method, source, prompts[pid], budget, **spec))
                if progress:
                    progress(f"{name} @ {budget}", j + 1, len(keep))
            scores = np.array([estimate_score(e) for e in ests])
            exp.methods[name][budget] = {
                "auroc": exp.method_auroc(scores),
                "band": list(bootstrap_band(scores, labels[0], seed=seed)),
                "rollouts_mean": float(np.mean([e.total_rollouts for e in ests])),
                **error_and_coverage(ests, kept_rates.tolist()),
                "estimates": [[e.rate, e.interval[0], e.interval[1], int(e.upper_bound_only)] for e in ests],
            }
            for e in ests:
                store.record_estimate(f"{name}@{budget}", e, prompt_id=e.prompt_id)
    return exp


def plot_auroc(exp: AurocExperiment, out) -> None:
    """AUROC vs budget per method (log x) with bands; naive simulated exactly."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    nb = sorted(exp.naive)
    ax.plot(nb, [exp.naive[b]["auroc"] for b in nb], "k-o", ms=3, label="naive (exact simulation)")
    ax.fill_between(nb, [exp.naive[b]["band"][0] for b in nb], [exp.naive[b]["band"][1] for b in nb],
                    color="k", alpha=0.1)
    for i, (name, d) in enumerate(exp.methods.items()):
        bs = sorted(d)
        ax.plot(bs, [d[b]["auroc"] for b in bs], "-o", ms=3, color=f"C{i}", label=name)
        ax.fill_between(bs, [d[b]["band"][0] for b in bs], [d[b]["band"][1] for b in bs], color=f"C{i}", alpha=0.15)
    for ref in (10_000, 100_000):
        ax.axhline(exp.naive[ref]["auroc"], color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("rollouts per prompt")
    ax.set_ylabel("AUROC (complies within 100,000 rollouts)")
    ax.set_title(f"{len(exp.prompts)} prompts never seen complying in 100 rollouts", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_ylim(0.4, 1.0)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
