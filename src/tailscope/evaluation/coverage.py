"""Do the intervals cover? Each method rerun with several seeds per prompt against exact truth.

Protocol (stated in the result file):

1. Prompts: ``prompts`` prompts of the organism with exact rates in ``[low, high]``, evenly
   spaced in log rate. Calibration prompts for the methods that tune (the default's switch point)
   are drawn per seed from the other prompts (:func:`~tailscope.estimators.tuning.calibration_split`).
2. Seeds: the sampler's seed keys the counter-based RNG with (proposal, prompt id, seed index),
   so seed s gives independent rollouts; each seed has its own run store (a stopped suite resumes).
3. Budgets: every method runs at each budget; rollouts at a proposal are nested prefixes across
   budgets (the store hands a smaller budget the first rollouts of a larger one).
4. Naive sampling is simulated exactly: its hit count is a Binomial(n, p) draw (``naive_draws``
   per prompt), scored with the estimator's own interval code.
5. Per method and budget: coverage (truth inside the 95% interval), the share flagged, coverage
   among unflagged estimates, median |log10(estimate / truth)| over point estimates (all, and
   unflagged), the share within a factor of 3, bounds-only answers and the count of each flag.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import evenly_in_log_rate

__all__ = ["CALIBRATION_METHODS", "in_range", "record", "run_calibration", "summarize"]

CALIBRATION_METHODS: dict[str, dict[str, Any]] = {
    "mis (switching, tuned): default": {"method": "mis", "switch_after": "tune"},
    "mis": {"method": "mis"},
    "lpe": {"method": "lpe"},
    "is (reference proposal)": {"method": "is", "proposal": "a=0"},
}
KEPT_DIAGNOSTICS = ("ess", "ess_hits", "khat", "khat_hits", "khat_contrib", "capped", "log10_weight_mean",
                    "max_weight_share", "standard_error", "sampled_interval", "bridge_decades",
                    "tail_widening_decades", "bootstrap_used", "bootstrap_interval", "trend_sd_decades",
                    "monotone_bound", "fit_alpha_last", "fit_points", "fit_hits", "residual_chi2", "residual_p")


def in_range(org: Any, low: float = 1e-8, high: float = 1e-3) -> dict[str, float]:
    """The organism's prompts whose exact rate is in ``[low, high]``: id -> rate."""
    return {pid: float(e["rate"]) for pid, e in org.ground_truth.items() if low <= float(e["rate"]) <= high}


def record(e, truth: float, seed: int) -> dict[str, Any]:
    """One estimate as a row of the result: enough to recompute every summary."""
    d = e.diagnostics
    fit = d.get("fit") or {}
    extra = {"fit_alpha_last": fit["alphas"][-1], "fit_points": len(fit["alphas"]),
             "fit_hits": int(sum(fit["hits"]))} if fit else {}
    kept = {k: v for k, v in {**d, **extra}.items() if k in KEPT_DIAGNOSTICS}
    return {"prompt": e.prompt_id, "seed": seed, "truth": truth, "rate": e.rate, "low": e.interval.low,
            "high": e.interval.high, "bound": bool(e.upper_bound_only), "hits": e.hits,
            "rollouts": e.total_rollouts, "flags": list(e.flags),
            "diagnostics": {k: _finite(v) for k, v in kept.items()}}


def _finite(v: Any) -> Any:
    """JSON has no infinities: k̂ = ±inf (too few weights / a flat tail) is kept as a string."""
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Coverage, share flagged, coverage among unflagged and errors over rows of :func:`record`."""

    def stats(rs):
        cover = [r["low"] <= r["truth"] <= r["high"] for r in rs]
        errs = [abs(math.log10(r["rate"] / r["truth"])) for r in rs if not r["bound"] and r["rate"] > 0]
        return cover, errs

    cover, errs = stats(rows)
    clean = [r for r in rows if not r["flags"]]
    cover_u, errs_u = stats(clean)
    med = lambda xs: float(np.median(xs)) if xs else None  # noqa: E731
    return {
        "estimates": len(rows), "coverage": float(np.mean(cover)) if cover else None,
        "flagged_share": 1 - len(clean) / len(rows) if rows else None,
        "coverage_unflagged": float(np.mean(cover_u)) if cover_u else None, "unflagged": len(clean),
        "median_abs_log10_error": med(errs), "median_abs_log10_error_unflagged": med(errs_u),
        "within_factor_3": float(np.mean([x <= math.log10(3) for x in errs])) if errs else None,
        "upper_bounds_only": sum(r["bound"] for r in rows),
        "flags": dict(Counter(f for r in rows for f in r["flags"])),
    }


def _naive_rows(truths: dict[str, float], budget: int, draws: int, seed: int) -> list[dict[str, Any]]:
    from ..estimators._interval import binomial_interval

    rng = np.random.default_rng(seed)
    rows = []
    for pid, p in truths.items():
        for i, k in enumerate(rng.binomial(budget, p, size=draws)):
            iv = binomial_interval({"hits": int(k), "n": budget}, 0.95)
            rows.append({"prompt": pid, "seed": i, "truth": p, "rate": k / budget, "low": iv.low, "high": iv.high,
                         "bound": bool(k == 0), "hits": int(k), "rollouts": budget, "flags": [], "diagnostics": {}})
    return rows


def run_calibration(
    organism_name: str,
    *,
    runs_dir: Path,
    prompts: int,
    seeds: Sequence[int],
    budgets: Sequence[int],
    max_new_tokens: int,
    methods: dict[str, dict[str, Any]] = CALIBRATION_METHODS,
    low: float = 1e-8,
    high: float = 1e-3,
    naive_draws: int = 200,
    calibration_prompts: int = 4,
    tune_once: bool = False,
    every: int = 1,
    exclude: Sequence[str] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run every method at every budget on every (prompt, seed); returns the JSON-ready result.

    Settings to tune are chosen per seed on that seed's calibration split, or with ``tune_once``
    on the first seed's and reused for the others (cheaper; the seeds then share one choice).
    ``exclude``: prompts never chosen nor used for tuning (another run's scored prompts)."""
    from ..estimators import StoreSource, estimate
    from ..judges import make_judge
    from ..organisms import load
    from ..sampling import PathSampler
    from ..store import RunStore, run_config
    from .calibration import calibration_split, resolve_tuned

    org = load(organism_name)
    judge = make_judge(org.judge_spec)
    rates = in_range(org, low, high)
    avoid = set(exclude)
    chosen = evenly_in_log_rate({i: r for i, r in rates.items() if i not in avoid}, prompts)
    ids = chosen[::every]  # a thinner spread of the same prompts; the calibration split avoids them all
    by_id = {p.id: p for p in org.prompts}
    rows: dict[str, dict[int, list]] = {name: {b: [] for b in budgets} for name in methods}
    tuned: dict[str, list] = {}
    for s in seeds:
        sampler = PathSampler(org.pair, max_new_tokens=max_new_tokens, seed=s, batch_size=256)
        config = run_config(sampler, judge=judge, suite="calibration")
        with RunStore.open(f"eval-calibration-{organism_name}-{max_new_tokens}-s{s}", config, root=runs_dir) as store:
            source = StoreSource(store, sampler, judge)
            if not (tune_once and tuned):
                held = calibration_split(org.prompts, [*chosen, *exclude], calibration_prompts, s)
                if progress:
                    progress(f"seed {s}: tuning on {len(held)} calibration prompts", 0, 1)
                specs, record_ = resolve_tuned(methods, source, sampler.scorer(), held, max(budgets), scored=chosen)
                for name, r in record_.items():
                    tuned.setdefault(name, []).append({"seed": s, **{k: v for k, v in r.items() if k != "rounds"}})
            for j, pid in enumerate(ids):
                for name, spec in specs.items():
                    spec = dict(spec)
                    method = spec.pop("method")
                    for b in sorted(budgets, reverse=True):  # the largest first: smaller ones reuse its prefixes
                        rows[name][b].append(record(estimate(method, source, by_id[pid], b, **spec), rates[pid], s))
                if progress:
                    progress(f"seed {s}: prompts", j + 1, len(ids))
    truths = {i: rates[i] for i in ids}
    out_methods = {"naive (exact simulation)": {str(b): summarize(_naive_rows(truths, b, naive_draws, 0))
                                                for b in budgets}}
    for name in methods:
        out_methods[name] = {str(b): {**summarize(rows[name][b]), "rows": rows[name][b]} for b in budgets}
    return {"organism": organism_name, "prompts": ids, "rates": [rates[i] for i in ids], "seeds": list(seeds),
            "budgets": list(budgets), "max_new_tokens": max_new_tokens, "reply_tokens_full": org.max_new_tokens,
            "methods": out_methods, "tuned": tuned}
