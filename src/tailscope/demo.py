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


class _Stage:
    """A stage of the demo counted in rollouts, reported as ``progress(stage, done, total)``."""

    def __init__(self, progress: Callable[[str, int, int], None] | None, name: str, total: int):
        self.progress, self.name, self.total, self.done = progress, name, total, 0
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.name, self.done, self.total)

    def __call__(self, k: int = 1) -> None:
        self.at(self.done + k)

    def at(self, done: int) -> None:
        """Move to ``done`` (rollouts reused from the run store never tick; a method may spend less)."""
        self.done = max(self.done, min(done, self.total))
        self._report()

    def end(self) -> None:
        self.at(self.total)


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
    batch_size: int | str = 256,
    say: Callable[[Any], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the numbers it printed, and writes ``out_dir/report.html``.

    ``progress(stage, done, total)`` counts each stage's rollouts (at most ``total``)."""
    from .estimators import StoreSource, lpe, mis
    from .estimators.tuning import tune_switch
    from .evaluation.calibration import calibration_split
    from .judges import make_judge
    from .lda import lda_sweep
    from .organisms import load
    from .report import write_report
    from .sampling import PathSampler
    from .store import RunStore, run_config
    from .sweep_report import sweep_section

    results: dict[str, Any] = {}
    org = load("refusal")
    judge = make_judge(org.judge_spec)
    sampler = PathSampler(org.pair, max_new_tokens=org.max_new_tokens, seed=seed, batch_size=batch_size)
    ids = pick_prompts(org.ground_truth, prompts)
    by_id = {p.id: p for p in org.prompts}
    estimates, rows = [], []
    rounds = 2
    with RunStore.open("demo-refusal", run_config(sampler, judge=judge, demo="refusal"), root=runs_dir) as store:
        held = calibration_split(org.prompts, ids, 2, seed)
        stage = _Stage(progress, "refusal: choosing MIS's switch point", rounds * len(held) * budget)
        switch = tune_switch(StoreSource(store, sampler, judge, progress=stage), sampler.scorer(), held, budget,
                             rounds=rounds)
        stage.end()
        say(f"path MIS switch point chosen on calibration prompts {[p.id for p in held]} "
            f"({switch.rollouts:,} rollouts, not scored): {switch.switch_after}")
        results["mis_switch_after"] = switch.switch_after
        stage = _Stage(progress, f"refusal: MIS and LPE on {len(ids)} prompts", 2 * len(ids) * budget)
        source = StoreSource(store, sampler, judge, progress=stage)
        for i, pid in enumerate(ids):
            for j, (method, kw) in enumerate(((mis, {"switch_after": switch.switch_after}), (lpe, {}))):
                e = method(source, by_id[pid], budget, **kw)
                store.record_estimate(e.method, e, prompt_id=pid)
                estimates.append(e)
                stage.at((2 * i + j + 1) * budget)
            truth = float(org.ground_truth[pid]["rate"])
            rows.append({"prompt": pid, "text": by_id[pid].preview(48), "truth": truth,
                         "naive_expected_hits": truth * budget,
                         "mis": estimates[-2].describe(), "lpe": estimates[-1].describe(),
                         "mis_ratio": estimates[-2].rate / truth if estimates[-2].rate else None,
                         "lpe_ratio": estimates[-1].rate / truth if estimates[-1].rate else None,
                         "rollouts": estimates[-1].total_rollouts})
        stage.end()
        shown = {pid: store.examples(pid, judge, 2) for pid in ids}
        refusal_config = store.config
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
    bd_sampler = PathSampler(bd.pair, max_new_tokens=min(lda_tokens, bd.max_new_tokens), seed=seed,
                             batch_size=batch_size)
    bd_prompts = [p for p in bd.prompts if not p.meta.get("trigger")][:lda_prompts]
    exact = sum(float(bd.ground_truth[p.id]["rate"]) for p in bd_prompts) / len(bd_prompts)
    with RunStore.open("demo-backdoor", run_config(bd_sampler, judge=bd_judge, demo="backdoor"), root=runs_dir) as store:
        stage = _Stage(progress, f"backdoor: amplifying at a = {', '.join(f'{a:g}' for a in amplifications)}",
                       len(amplifications) * len(bd_prompts) * lda_rollouts)
        points = lda_sweep(StoreSource(store, bd_sampler, bd_judge, stage), bd_prompts, amplifications, lda_rollouts)
        stage.end()
        backdoor_config = store.config
    results["backdoor"] = {"exact_rate": exact, "points": [p.to_dict() for p in points]}
    say(_backdoor_table(points, exact, lda_rollouts * len(bd_prompts)))

    truth = {pid: float(org.ground_truth[pid]["rate"]) for pid in ids}
    alpha_truth = {pid: org.ground_truth[pid].get("alpha_rates", {}) for pid in ids}
    section = sweep_section([p.to_dict() for p in points], Path(out_dir) / "img",
                            title=f"backdoor organism, no trigger: logit diff amplification ({lda_rollouts} rollouts "
                                  f"per prompt on {len(bd_prompts)} prompts, replies cut at {bd_sampler.max_new_tokens} "
                                  "tokens)", exact_rate=exact)
    config = {"demo": {"budget": budget, "prompts": ids, "calibration_prompts": [p.id for p in held],
                       "mis_switch_after": switch.switch_after, "amplifications": list(amplifications),
                       "lda_rollouts": lda_rollouts, "lda_prompts": [p.id for p in bd_prompts], "seed": seed},
              "refusal run": refusal_config, "backdoor run": backdoor_config}
    page = write_report(estimates, out_dir, title="tailscope demo: refusal and backdoor organisms", truth=truth,
                        alpha_truth=alpha_truth, config=config, sections=[section],
                        prompts={pid: by_id[pid].preview(300) for pid in ids}, examples=shown)
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
