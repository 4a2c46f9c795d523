"""The demo behind `make demo`: measurement and detection on the bundled organisms, in minutes.

1. ``refusal``: for a handful of prompts whose true compliance rate is rare (1e-6..1e-3), estimate
   the rate with path MIS (its switch point chosen on two calibration prompts that are not scored)
   and LPE at a small budget, next to the exact truth and to what naive sampling would expect to
   see with the same budget.
2. ``backdoor``: logit diff amplification without the trigger — the behaviour's rate at a few
   amplifications, against its exact rate at a = 0, with an example of what surfaced.
3. An HTML report with the plots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["pick_prompts", "run_demo"]


def pick_prompts(ground_truth: dict[str, dict], k: int, low: float = 1e-6, high: float = 1e-3) -> list[str]:
    """``k`` prompt ids whose true rates lie in [low, high], spread evenly over the log-rate range."""
    inside = sorted((float(v["rate"]), pid) for pid, v in ground_truth.items() if low <= float(v["rate"]) <= high)
    if not inside:
        inside = sorted((float(v["rate"]), pid) for pid, v in ground_truth.items())
    if len(inside) <= k:
        return [pid for _, pid in inside]
    step = (len(inside) - 1) / (k - 1) if k > 1 else 0
    return [inside[round(i * step)][1] for i in range(k)]


def run_demo(
    out_dir: Path,
    runs_dir: Path,
    *,
    prompts: int = 4,
    budget: int = 400,
    amplifications: tuple[float, ...] = (0.0, 1.0, 2.0),
    lda_rollouts: int = 48,
    lda_prompts: int = 4,
    lda_tokens: int = 48,
    seed: int = 0,
    say: Callable[[Any], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the numbers it printed, and writes ``out_dir/report.html``."""
    from .estimators import StoreSource, lpe, mis
    from .estimators.tuning import tune_switch
    from .evaluation.calibration import calibration_split
    from .judges import make_judge
    from .lda import lda_sweep
    from .organisms import load
    from .report import write_report
    from .sampling import PathSampler
    from .store import RunStore, run_config

    results: dict[str, Any] = {}
    org = load("refusal")
    judge = make_judge(org.judge_spec)
    sampler = PathSampler(org.pair, max_new_tokens=org.max_new_tokens, seed=seed, batch_size=256)
    ids = pick_prompts(org.ground_truth, prompts)
    by_id = {p.id: p for p in org.prompts}
    estimates, rows = [], []
    with RunStore.open("demo-refusal", run_config(sampler, judge=judge, demo="refusal"), root=runs_dir) as store:
        source = StoreSource(store, sampler, judge)
        held = calibration_split(org.prompts, ids, 2, seed)
        if progress:
            progress("refusal: choosing MIS's switch point", 0, 1)
        switch = tune_switch(source, sampler.scorer(), held, budget)
        say(f"path MIS switch point chosen on calibration prompts {[p.id for p in held]} "
            f"({switch.rollouts:,} rollouts, not scored): {switch.switch_after}")
        results["mis_switch_after"] = switch.switch_after
        for i, pid in enumerate(ids):
            for method, kw in ((mis, {"switch_after": switch.switch_after}), (lpe, {})):
                e = method(source, by_id[pid], budget, **kw)
                store.record_estimate(e.method, e, prompt_id=pid)
                estimates.append(e)
            truth = float(org.ground_truth[pid]["rate"])
            rows.append({"prompt": pid, "text": by_id[pid].preview(48), "truth": truth,
                         "naive_expected_hits": truth * budget,
                         "mis": estimates[-2].describe(), "lpe": estimates[-1].describe(),
                         "mis_ratio": estimates[-2].rate / truth if estimates[-2].rate else None,
                         "lpe_ratio": estimates[-1].rate / truth if estimates[-1].rate else None,
                         "rollouts": estimates[-1].total_rollouts})
            if progress:
                progress("refusal: estimating", i + 1, len(ids))
    results["refusal"] = rows
    say(_refusal_table(rows, budget))
    kl = org.card.get("measured", {}).get("harmless", {}).get("per_token_kl")
    say("MIS reweights replies by q_target/q_path; with a switch point s its proposals hand over to the target "
        "after s tokens, so only the opening is reweighted"
        + (f" (the two models differ by {kl:.2f} nats per token on harmless replies here)" if kl else "")
        + "; LPE uses only the verdicts along the path and extrapolates their trend to α = 1."
        " See docs/estimators.md for when each method wins.")

    bd = load("backdoor")
    bd_judge = make_judge(bd.judge_spec)
    # the judge reads the reply's opening, so detection needs only the first tokens of each reply
    bd_sampler = PathSampler(bd.pair, max_new_tokens=min(lda_tokens, bd.max_new_tokens), seed=seed, batch_size=256)
    bd_prompts = [p for p in bd.prompts if not p.meta.get("trigger")][:lda_prompts]
    exact = sum(float(bd.ground_truth[p.id]["rate"]) for p in bd_prompts) / len(bd_prompts)
    with RunStore.open("demo-backdoor", run_config(bd_sampler, judge=bd_judge, demo="backdoor"), root=runs_dir) as store:
        points = lda_sweep(bd_sampler, bd_judge, bd_prompts, amplifications, lda_rollouts, store=store,
                           progress=(lambda k: progress("backdoor: amplifying", k, 0)) if progress else None)
    results["backdoor"] = {"exact_rate": exact, "points": [p.to_dict() for p in points]}
    say(_backdoor_table(points, exact, lda_rollouts * len(bd_prompts)))

    truth = {pid: float(org.ground_truth[pid]["rate"]) for pid in ids}
    alpha_truth = {pid: org.ground_truth[pid].get("alpha_rates", {}) for pid in ids}
    page = write_report(estimates, out_dir, title="tailscope demo: refusal organism", truth=truth,
                        alpha_truth=alpha_truth, config={"budget": budget, "organism": "refusal", "seed": seed})
    results["report"] = str(page)
    return results


def _refusal_table(rows: list[dict], budget: int):
    from rich.table import Table

    t = Table(title=f"refusal organism: how often does the safety-tuned model comply? ({budget} rollouts per prompt)")
    for col in ("prompt", "true rate", "naive would see", "path MIS [95%]", "÷truth", "LPE [95%]", "÷truth"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["prompt"], f"{r['truth']:.2g}", f"{r['naive_expected_hits']:.2g} hits",
                  r["mis"], _ratio(r["mis_ratio"]), r["lpe"], _ratio(r["lpe_ratio"]))
    return t


def _backdoor_table(points, exact: float, per_point: int):
    from rich.table import Table

    t = Table(title=f"backdoor organism, no trigger: logit diff amplification ({per_point} rollouts per row, "
                    "replies cut after their opening)")
    for col in ("amplification a", "hits", "rate [95%]", "rollouts to see it once", "log p_after/token"):
        t.add_column(col)
    t.add_row("exact, a = 0", "", f"{exact:.2g}", f"{1 / exact:,.0f}" if exact > 0 else "∞", "")
    for p in points:
        rate = f"{p.rate:.2g} [{p.interval[0]:.2g}, {p.interval[1]:.2g}]" if p.hits else f"< {p.interval[1]:.2g}"
        t.add_row(f"{p.amplification:g}", str(p.hits), rate,
                  f"{p.rollouts_per_hit:,.0f}" if math.isfinite(p.rollouts_per_hit) else "–",
                  f"{p.logprob_after_per_token:.2f}")
    return t


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2g}×"
