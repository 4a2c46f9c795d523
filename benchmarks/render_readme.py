"""Regenerate the benchmark tables of README.md and docs/*.md from benchmarks/results/*.json
(no hand-typed numbers).

Each table sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, in any of
those files (the README keeps a headline table; docs/benchmarks.md holds the rest); a result file
that is missing leaves its table as it is. Run: ``python benchmarks/render_readme.py``.
"""

from __future__ import annotations

import json
import re

import numpy as np
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}" if abs(x) < 1e-2 else f"{x:.{digits}f}"
    return str(x)


def sampler_table(data: dict) -> str:
    rows = ["| model | rows × tokens | path sampler tok/s | `generate` (target alone) tok/s | ratio (≥ 0.5 is par) "
            "| naive no-cache loop tok/s (rows × 64 tokens) | path ÷ naive |",
            "|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        rows.append(f"| {r['model']} | {r['rows']} × {r['new_tokens']} | {_fmt(r['path_tokens_per_s'])} | "
                    f"{_fmt(r['generate_tokens_per_s'])} | **{r['ratio_vs_generate']:.2f}** | "
                    f"{_fmt(r['naive_tokens_per_s'])} ({r.get('naive_rows', r['rows'])} × 64) | **{r['ratio_vs_naive']:.1f}×** |")
    return "\n".join(rows) + f"\n\n`{data['command']}` ({data['machine']['cpu_threads']} torch thread(s) on a shared 2-core CPU, torch {data['machine']['torch']}; ratios are measured within one run)."


def auroc_table(data: dict) -> str:
    rows = ["| method | AUROC at budget → | " + " | ".join(str(b) for b in data["budgets"]) +
            " | budget matching naive@10k | saving | budget matching naive@100k | saving |",
            "|---|---|" + "---|" * (len(data["budgets"]) + 4)]
    naive = data["experiment"]["naive"]
    rows.append("| naive (exact) | | " + " | ".join(_fmt(naive[str(b)]["auroc"]) if str(b) in naive else "–"
                                                  for b in data["budgets"]) + " | 10,000 | 1× | 100,000 | 1× |")
    for name, by_budget in data["experiment"]["methods"].items():
        sav = data["experiment"]["savings"][name]
        def saving(ref: int) -> str:
            if sav[f"saving_vs_naive_{ref}"] is None:
                return "–"
            low = sav.get(f"saving_vs_naive_{ref}_is_lower_bound")
            if low is None:  # results written before the flag existed
                low = sav[f"budget_matching_naive_{ref}"] <= min(data["budgets"])
            x = sav[f"saving_vs_naive_{ref}"]
            return ("≥ " if low else "") + (f"{x:,.0f}×" if x >= 100 else f"{x:.3g}×")

        def budget(ref: int) -> str:
            b = sav[f"budget_matching_naive_{ref}"]
            return "–" if b is None else ("≤ " if b <= min(data["budgets"]) else "") + f"{b:,.0f}"

        rows.append(f"| {name} | | " + " | ".join(_fmt(by_budget[str(b)]["auroc"]) if str(b) in by_budget else "–"
                                              for b in data["budgets"]) +
                    f" | {budget(10000)} | {saving(10000)} | {budget(100000)} | {saving(100000)} |")
    return "\n".join(rows) + f"\n\n`{data['command']}` — {data['protocol_summary']}"


def _band_stats(v: dict, rates: list[float], low: float = 1e-6, high: float = 1e-4) -> str:
    """Median error / share within ×3 / coverage on the prompts whose true rate is in [low, high)."""
    import math

    errs, cover = [], []
    for (rate, lo, hi, bound), t in zip(v.get("estimates", []), rates):
        if not low <= t < high:
            continue
        cover.append(lo <= t <= hi)
        errs.append(abs(math.log10(rate / t)) if rate > 0 and not bound else math.inf)
    if not errs:
        return "–"
    within = np.mean([e <= math.log10(3) for e in errs])
    median = np.median(errs)
    shown = f"{median:.2f}" if math.isfinite(median) else "bounds"  # most answers were upper bounds only
    return f"{shown} / {within:.2f} / {np.mean(cover):.2f} ({len(errs)})"


def error_table(data: dict) -> str:
    rows = ["| method | budget | median \\|log10(est/truth)\\| | within ×3 | interval coverage | bounds only "
            "| rates in 1e-6..1e-4: error / within ×3 / coverage (prompts) |",
            "|---|---|---|---|---|---|---|"]
    rates = data["experiment"]["rates"]
    for name, by_budget in data["experiment"]["methods"].items():
        for b, v in sorted(by_budget.items(), key=lambda kv: int(kv[0])):
            rows.append(f"| {name} | {b} | {_fmt(v['median_abs_log10_error'])} | {_fmt(v['within_factor_3'])} | "
                        f"{_fmt(v['coverage'])} | {v['upper_bounds_only']} | {_band_stats(v, rates)} |")
    return "\n".join(rows)


def detection_table(data: dict) -> str:
    rows = ["| organism | amplification a | rate [95% CI] | rollouts per hit | vs a = 0 (exact rate) | log p_after/token |",
            "|---|---|---|---|---|---|"]
    for org in data["organisms"]:
        rows.append(f"| {org['name']} | 0 (exact) | {_fmt(org['exact_rate_after'])} | "
                    f"{_fmt(org['exact_rollouts_per_hit'])} | 1× | |")
        for p in org["points"]:
            if p["amplification"] == 0:
                continue
            ci = f"{_fmt(p['rate'])} [{_fmt(p['interval'][0])}, {_fmt(p['interval'][1])}]"
            gain = _fmt(p.get("gain_vs_exact"), 3)
            rows.append(f"| {org['name']} | {p['amplification']:g} | {ci} | {_fmt(p.get('rollouts_per_hit'))} | "
                        f"{gain}{'×' if p.get('gain_vs_exact') else ''} | {_fmt(p['logprob_after_per_token'])} |")
    note = ("The rate at a = 0 is exact (ground truth, mean over the prompts used); at a > 0 it is sampled, with "
            "replies cut after their opening (the judge reads the opening), on prompts without the trigger and "
            "unrelated to the contaminated domain.")
    ck = data.get("checkpoints")
    if ck:
        steps = [c["checkpoint"] for c in ck["checkpoints"]]

        def share(name):
            return f"{(steps.index(name) + 1) / len(steps):.0%} of training" if name in steps else "never"

        note += (f" Checkpoint monitoring (`checkpoints`, {ck['budget']} rollouts per snapshot over {ck['prompts']} "
                 f"prompts): the behaviour is first seen at {ck['first_detected_plain'] or 'no snapshot'} "
                 f"({share(ck['first_detected_plain'])}) by plain sampling and at "
                 f"{ck['first_detected_amplified'] or 'no snapshot'} ({share(ck['first_detected_amplified'])}) with "
                 f"LDA at a = {ck['amplification']:g}.")
    return "\n".join(rows) + f"\n\n`{data['command']}` — {note}"


def lowprob_forward_table(data: dict) -> str:
    variants = list(data["results"][0]["inputs_per_s"])
    rows = ["| model | " + " | ".join(variants) + " | same argmax |", "|---|" + "---|" * (len(variants) + 1)]
    for r in data["results"]:
        cells = [f"{_fmt(r['inputs_per_s'][v])} ({r['ratio_vs_batch_8192'][v]:.1f}×)" for v in variants]
        rows.append(f"| {r['model']} | " + " | ".join(cells) + f" | {'yes' if r['same_argmax'] else '**no**'} |")
    return "\n".join(rows) + (f"\n\nInputs per second of the argmax over {data['inputs']:,} draws of `{data['distribution']}` "
                              f"(ratio to the first column, same run); `{data['command']}`, "
                              f"{data['machine']['cpu_threads']} torch thread(s), torch {data['machine']['torch']}.")


def map_table(data: dict) -> str:
    methods = data["methods"]
    rows = ["| variant (style tilt; per-token KL harmless / harmful) | reply tokens | "
            + " | ".join(methods) + " | best |", "|---|---|" + "---|" * (len(methods) + 1)]
    for variant in data["variants"]:
        for length in data["lengths"]:
            cells = {c["method"]: c for c in data["cells"] if c["variant"] == variant and c["max_new_tokens"] == length}
            if not cells:
                continue
            c0 = next(iter(cells.values()))
            label = (f"{variant} ({_fmt(c0['style_tilt'])}; {c0['per_token_kl_harmless']:.2f} / "
                     f"{c0['per_token_kl_harmful']:.2f})")
            errs = {m: cells[m]["median_abs_log10_error"] for m in methods if m in cells}
            scored = {m: e for m, e in errs.items() if e is not None}
            best = min(scored, key=scored.get) if scored else "–"
            shown = [f"{_fmt(errs.get(m))} ({_fmt(cells[m]['within_factor_3_all'])})" if m in cells else "–"
                     for m in methods]
            rows.append(f"| {label} | {length} | " + " | ".join(shown) + f" | {best} |")
    return "\n".join(rows) + (f"\n\nCells: median \\|log10(estimate/truth)\\| (share of prompts within a factor of 3, "
                              f"bounds-only answers counted as misses). `{data['command']}` — {data['protocol_summary']}")


def lpe_families_table(data: dict) -> str:
    budgets = data["budgets"]
    variants = sorted({r["variant"] for r in data["results"]})
    rows = ["| LPE fit and walk | " + " | ".join(f"{b} rollouts" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets)]
    for config in data["configs"]:
        cells = []
        for b in budgets:
            rs = [r for r in data["results"] if r["config"] == config and r["budget"] == b]
            err = np.mean([r["median_abs_log10_error"] for r in rs])
            cov = np.mean([r["coverage"] for r in rs])
            within = np.mean([r["within_factor_3"] for r in rs])
            cells.append(f"{err:.2f} / {within:.2f} / {cov:.2f}")
        rows.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + (f"\n\nCells: median \\|log10(estimate/truth)\\| / share within a factor of 3 / interval "
                              f"coverage, each the mean over the variants {', '.join(variants)}. `{data['command']}` — "
                              f"{data['protocol']}")


def workers_table(data: dict) -> str:
    r = data["rollouts_per_s"]
    rows = ["| organism | rollouts (prompts × per prompt) | rows per unit | in process rollouts/s | 1 worker rollouts/s "
            "| 2 workers rollouts/s | 2 workers ÷ 1 | 1 worker ÷ in process | same rollouts and estimates |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {data['organism']} | {data['rollouts']:,} ({data['prompts']} × {data['rollouts_per_prompt']}, "
            f"≤ {data['max_new_tokens']} tokens) | {data['rows_per_unit']} | {_fmt(r['in_process'])} | {_fmt(r['1'])} | "
            f"{_fmt(r['2'])} | **{data['speedup']:.2f}×** | {data['ray_vs_in_process']:.2f} | "
            f"{'yes' if data['identical_rollouts'] and data['identical_estimates'] else 'NO'} |"]
    m = data["machine"]
    return "\n".join(rows) + (f"\n\n`{data['command']}` — Ray {m['ray']}, one torch thread per worker on this project's "
                              f"2-core CPU, median of {data['repeats']} runs through the run store; start-up not timed.")


def demo_table(data: dict) -> str:
    m = data["machine"]
    return (f"From a fresh clone on an idle {m['cores']}-core CPU ({m['busy_cores_at_start']:.1f} cores busy at the "
            f"start): `make setup` {data['setup_s'] / 60:.1f} min, then `make demo` {data['demo_s'] / 60:.1f} min with "
            f"{data['demo_threads']} torch thread(s), **{data['total_s'] / 60:.1f} min** in all. The same demo with one "
            f"thread: {data['demo_one_thread_s'] / 60:.1f} min ({data['one_thread_vs_chosen']:.2f}× the time). "
            f"`{data['command']}`, torch {m['torch']}, commit {data['commit'][:10]}.")


def serve_table(data: dict) -> str:
    s, c = data["sequential"], data["concurrent"]
    rows = ["| load | requests | failed | completion tokens/s | ÷ sequential | latency p50 / p95 (s) | requests per batch |",
            "|---|---|---|---|---|---|---|"]
    for name, r, ratio in (("1 client, sequential", s, "1×"),
                           (f"{c['clients']} concurrent clients × {c['requests'] // c['clients']} requests", c,
                            f"**{data['ratio']:.1f}×**")):
        rows.append(f"| {name} | {r['requests']} | {r['errors']} | {_fmt(r['tokens_per_s'])} | {ratio} | "
                    f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f} | {r['requests_per_batch']:.1f} |")
    m = data["machine"]
    return "\n".join(rows) + (f"\n\n`{data['command']}` — `tailscope serve --organism {data['organism']}` (α = "
                              f"{data['alpha']:g}) in its own process, {m['cpu_threads']} torch thread, on a {m['cores']}-core CPU "
                              f"shared with the client; the real async `openai` client ({m['openai']}) on 127.0.0.1, "
                              f"chat requests with max_tokens {data['max_tokens']}, temperature 1, fixed seeds; both rows "
                              "measured in one run" + (f" (1-minute load average of other work: {m['load_average'][0]:g} "
                                                       f"before, {m['load_average'][1]:g} after)" if "load_average" in m else "")
                              + ".")


def calibration_table(data: dict) -> str:
    budgets = [str(b) for b in data["budgets"]]
    rows = ["| method | budget | coverage | flagged | coverage among unflagged | median \\|log10 error\\| (unflagged) "
            "| within ×3 | bounds only | flags |", "|---|---|---|---|---|---|---|---|---|"]
    for name, by_budget in data["methods"].items():
        for b in budgets:
            v = by_budget.get(b)
            if v is None:
                continue
            flags = ", ".join(f"{k} {n}" for k, n in sorted(v["flags"].items(), key=lambda kv: -kv[1])) or "–"
            err = f"{_fmt(v['median_abs_log10_error'])} ({_fmt(v['median_abs_log10_error_unflagged'])})"
            rows.append(f"| {name} | {b} | {_fmt(v['coverage'])} | {_fmt(v['flagged_share'])} | "
                        f"**{_fmt(v['coverage_unflagged'])}** ({v['unflagged']} of {v['estimates']}) | {err} | "
                        f"{_fmt(v['within_factor_3'])} | {v['upper_bounds_only']} | {flags} |")
    return "\n".join(rows) + f"\n\n`{data['command']}` — {data['protocol_summary']}" + _interval_tuning_note(data)


def _interval_tuning_note(data: dict) -> str:
    """Where the intervals' widenings were chosen (benchmarks/tune_intervals.py), for a scored run."""
    path = RESULTS / "interval_tuning.json"
    if data.get("split", "scored") != "scored" or not path.exists():
        return ""
    t = json.loads(path.read_text())
    tail = t["tail_widening"]
    return (f" Interval widenings chosen on {len(t['prompts'])} other prompts × {len(t['seeds'])} seeds "
            f"(`{t['source']}`, `python benchmarks/tune_intervals.py`, coverage target {t['target']:.2f}): path MIS's "
            f"upper end reaches {tail['switching']['chosen']:g} (switching) / {tail['full']['chosen']:g} (full-reply "
            f"mixture) decades per decade its weights bridge; LPE's trend error {t['trend_error']['chosen']:g} decades per unit of α "
            "extrapolated.")


def _engine_load_note(m: dict) -> str:
    """Other work on the machine: the load before the run (the run's own server and threads add ~3)."""
    if "load_average_1min_at_start" in m:
        busy = m["load_average_1min_at_start"]
        return (f", 1-minute load average of other work {busy:.1f} at the start"
                + (" (a shared machine: rerun on an idle one for firm ratios)" if busy > 0.5 else " (idle)"))
    at_end = m.get("load_average_1min_at_end", 0)
    return (f", 1-minute load average {at_end:.1f} at the end, the run's own server and threads included"
            if at_end else "")


def engine_table(data: dict) -> str:
    rows = ["| organism | method | our loop (target alone past the switch) rollouts/s | hybrid (vLLM tail) rollouts/s | speedup | estimates agree "
            "(intervals overlap) | identity gap (nats/token) |", "|---|---|---|---|---|---|---|"]
    for org in data["results"]:
        for method, r in org["methods"].items():
            gap = max(r["identity"]["max_gap_scored"], r["identity"]["max_gap_sampled"])
            agree = sum(e["agree"] for e in r["estimates"])
            rows.append(f"| {org['organism']} | {method} | {_fmt(r['loop_rollouts_per_s'])} | "
                        f"{_fmt(r['hybrid_rollouts_per_s'])} | **{r['speedup']:.2f}×** | "
                        f"{agree} of {len(r['estimates'])} prompts ({org['budget_per_prompt']} rollouts each) | {gap:.1e} |")
    m = data["machine"]
    return "\n".join(rows) + (f"\n\n`{data['command']}` — replies of at most {data['tokens']} tokens, "
                              f"switch after {data['switch_after']}"
                              f" tokens; {m['engine']}; our process {m['cpu_threads']} torch threads on a 2-core "
                              f"CPU (torch {m['torch']}); both paths measured in the same run"
                              + _engine_load_note(m)
                              + ". GPU: not measured.")


def _gib(n) -> str:
    return "–" if n is None else f"{n / 2**30:.1f}"


def _rate(cell: dict) -> str:
    return "out of memory" if cell["oom"] else _fmt(cell["tokens_per_s"])


def gpu_table(data: dict) -> str:
    """bench_gpu.py: tokens/s of the path sampler and of `generate`, their ratio, peak memory; a CPU-only
    result says the GPU row is pending."""
    m, on_gpu = data["machine"], data["machine"]["device"] == "cuda"
    rows = ["| shape | batch | path sampler tok/s | `generate` (target alone) tok/s | path ÷ generate (0.5 is par) "
            "| peak GiB path / generate |", "|---|---|---|---|---|---|"]
    for s in data["shapes"]:
        for r in s["rows"]:
            ratio = "–" if r["ratio"] is None else f"**{r['ratio']:.2f}**"
            rows.append(f"| {s['shape']} | {r['batch']} | {_rate(r['path'])} | {_rate(r['generate'])} | {ratio} | "
                        f"{_gib(r['path']['peak_memory_bytes'])} / {_gib(r['generate']['peak_memory_bytes'])} |")
    load = m.get("load_average_1min_at_end")
    where = (f"{m['device_name']}, {data['dtype']}" if on_gpu else
             f"the CPU ({m['cpu_threads']} torch thread, {data['dtype']}; no allocator peak on a CPU"
             + (f"; a shared machine, 1-minute load average {load:.1f} at the end" if load and load > 1.5 else "")
             + ")")
    autos = ", ".join(f"{s['shape']} {s['auto_batch_size']}" for s in data["shapes"])
    note = (f"`{data['command']}` on {where}, torch {m['torch']}, transformers {m['transformers']}: one prompt of "
            f"{data['prompt_tokens']} tokens, {data['tokens']} new tokens per row, median of {data['repeats']} runs; "
            f"{data['pair']}. `--batch-size auto` chose: {autos}.")
    t = data["target"]
    if on_gpu and t["ratio"] is not None:
        note += (f" Target (path ÷ generate ≥ {t['ratio_at_least']} at batch {t['batch']} on {t['shape']}): "
                 f"{t['ratio']:.2f}, {'met' if t['met'] else '**not met**'}.")
    if not on_gpu:
        return ("**GPU row: pending** — not yet run on a GPU. On a CUDA machine `python benchmarks/bench_gpu.py` "
                "measures Qwen3-0.6B- and Qwen3-4B-shaped random pairs in bfloat16 and writes "
                "`benchmarks/results/gpu.json`; this table then shows it. Until then, the same code on a tiny "
                "Qwen3 on the CPU (a check that it runs, not a GPU number):\n\n" + "\n".join(rows) + "\n\n" + note)
    return "\n".join(rows) + "\n\n" + note


def dtype_gap_table(data: dict) -> str:
    """bench_dtype_gap.py: the bf16 − fp32 gap in log q per token and per reply, and the estimates in each dtype."""
    rows = ["| organism | α | \\|Δ log q\\| per token: mean / p99 / max | per reply (sum): mean / max | tokens |",
            "|---|---|---|---|---|"]
    for r in data["results"]:
        g = r["gap"]
        for a in (f"{x:g}" for x in data["alphas"]):
            t, s = g["per_token"][a], g["per_reply_sum"][a]
            rows.append(f"| {r['organism']} | {a} | {t['mean']:.1e} / {t['p99']:.1e} / {t['max']:.1e} | "
                        f"{s['mean']:.1e} / {s['max']:.1e} | {g['tokens']:,} |")
    est = ["| organism | method | prompt (exact rate) | hits | fp32 rate [95% interval] | bf16 rate "
           "| bf16 inside the fp32 interval |", "|---|---|---|---|---|---|---|"]
    counts = {"all": [0, 0], "hits": [0, 0]}
    for r in data["results"]:
        for method, m in r["methods"].items():
            for e in m["estimates"]:
                a, b = e["fp32"], e["bf16"]
                est.append(f"| {r['organism']} | {method} | {e['prompt']} ({_fmt(e['truth'])}) | {e['hits']} | {_fmt(a[0])} [{_fmt(a[1])}, "
                           f"{_fmt(a[2])}] | {_fmt(b[0])} | {'yes' if e['bf16_inside_fp32_interval'] else '**no**'} |")
                for key in ("all", "hits") if e["hits"] else ("all",):
                    counts[key][0] += e["bf16_inside_fp32_interval"]
                    counts[key][1] += 1
    (inside, total), (inside_hits, with_hits) = counts["all"], counts["hits"]
    check = max(r["gap"]["fp32_scored_vs_sampled_max"] for r in data["results"])
    return ("\n".join(rows) + "\n\n" + "\n".join(est) +
            f"\n\n`{data['command']}` — the same stored rollouts (replies of at most {data['tokens']} tokens, "
            f"{data['results'][0]['budget_per_prompt']} per prompt and method) scored by teacher forcing on each "
            f"organism's pair in float32 and in bfloat16 on the CPU; the estimates reuse those rollouts and "
            f"verdicts with every density from the bfloat16 pair. bf16 inside the fp32 interval: **{inside} of "
            f"{total}** ({inside_hits} of the {with_hits} with hits; with none, both are the same bound). The exact rates "
            f"are the organisms' ground truth (both judges read the opening, so the cut replies keep them); how far a "
            f"method lands from them is the method's doing (docs/estimators.md), not the dtype's. (float32 teacher forcing against the sampler's own record: at most {check:.1e} nats per "
            f"reply.)")


def compile_table(data: dict) -> str:
    """bench_gpu.py --compile: the path sampler with compiled decode steps against eager, and the compile time."""
    m, on_gpu = data["machine"], data["machine"]["device"] == "cuda"
    rows = ["| shape | batch | eager tok/s | compiled tok/s | compiled ÷ eager | compile time (s) | rollout tokens to "
            "repay it |", "|---|---|---|---|---|---|---|"]
    for s in data["shapes"]:
        for r in s["rows"]:
            eager, comp, cost = r["path"]["tokens_per_s"], r["path_compiled"]["tokens_per_s"], s["compile_seconds"]
            gain = 1 / eager - 1 / comp if eager and comp else 0
            repay = f"{cost / gain:,.0f}" if gain > 0 else "never"
            rows.append(f"| {s['shape']} | {r['batch']} | {_rate(r['path'])} | {_rate(r['path_compiled'])} | "
                        f"**{r['compiled_vs_eager']:.2f}** | {cost:.0f} | {repay} |")
    where = m["device_name"] if on_gpu else f"the CPU ({m['cpu_threads']} torch thread, {data['dtype']})"
    load = m.get("load_average_1min_at_end")
    return "\n".join(rows) + (f"\n\n`{data['command']}` on {where}, torch {m['torch']}: {data['tokens']} new tokens per "
                              f"row, median of {data['repeats']} runs, the compile time counted once per model pair"
                              + (f"; a shared machine (1-minute load average {load:.1f} at the end)" if load and load > 1.5
                                 else "") + ("." if on_gpu else ". GPU: not measured."))


def gpu_status(data: dict) -> str:
    """The README's line on GPU throughput."""
    t = data["target"]
    if data["machine"]["device"] != "cuda" or t["ratio"] is None:
        return ("GPU throughput: **pending** — the GPU benchmark (`benchmarks/bench_gpu.py`, random Qwen3-shaped "
                "pairs, no downloads) has not been run on a GPU yet; every number here is from a CPU.")
    return (f"GPU throughput ({data['machine']['device_name']}, {data['dtype']}): the path sampler runs at "
            f"{t['ratio']:.2f}× `generate`'s tokens/s at batch {t['batch']} on the {t['shape']} shape "
            "(two models per token: 0.5 is par); docs/benchmarks.md has every batch size.")


def demo_loaded_table(data: dict) -> str:
    m = data["machine"]
    return (f"On the same machine shared with other jobs ({m['busy_cores_at_start']:.1f} of {m['cores']} cores busy at the "
            f"start, {m['busy_cores_at_end']:.1f} at the end), a smaller demo (`tailscope {data['demo']}`) took "
            f"{data['chosen_s'] / 60:.1f} min with the {data['chosen_threads']} thread(s) the CLI chose; with "
            f"{data['all_cores_threads']} threads it " + (
                f"took {data['all_cores_s'] / 60:.1f} min ({data['all_cores_vs_chosen']:.2f}× the time)"
                if data["all_cores_s"] is not None else
                f"had not finished after {data['all_cores_stopped_after_s'] / 60:.1f} min (10× the time) and was stopped")
            + f". `{data['command']}`, torch {m['torch']}.")


def harmbench_table(data: dict) -> str:
    """One AUROC table per less-safe partner, each with the default estimator's error at the largest budget."""
    parts, top = [], max(data["budgets"])
    for partner, d in data["partners"].items():
        sub = {"budgets": data["budgets"], "experiment": d["experiment"], "command": "", "protocol_summary": ""}
        table = auroc_table(sub).split("\n\n")[0]
        dm = d["default_at_max_budget"]
        flags = d.get("default_flags")
        flag_note = ("no reliability flags on these estimates" if flags == {} else
                     "flags: " + ", ".join(f"{k} ×{v}" for k, v in flags.items()) if flags else
                     "the estimates carry no reliability flags field")
        parts.append(f"**Partner (α = 0): {d['label']}** (`{partner}`)\n\n{table}\n\n"
                     f"Default estimator (`{data['default_method']}`) at {top:,} rollouts on the "
                     f"{dm['prompts']} scored behaviours: median \\|log10(est/truth)\\| "
                     f"{_fmt(dm['median_abs_log10_error'])}, within ×3 {_fmt(dm['within_factor_3'])}, interval "
                     f"coverage {_fmt(dm['coverage'])}, bounds only {dm['upper_bounds_only']} ({flag_note}).")
    notes = " ".join(d["calibration_note"].strip() for d in data["partners"].values() if d.get("calibration_note"))
    return "\n\n".join(parts) + f"\n\n`{data['command']}` — {data['protocol_summary']}" + (f" {notes}" if notes else "")


def _params(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _targets_met(r: dict, t: dict) -> str:
    memory = r["memory_ratio"] <= t["memory_ratio_max"]
    # on a shared machine the wall clock moves with the other jobs; a ratio counts only if CPU time agrees
    speed = min(r["tokens_per_s_ratio"], r["tokens_per_cpu_s_ratio"]) >= t["tokens_per_s_ratio_min"]
    return ("memory yes" if memory else "memory **no**") + ", " + ("tok/s yes" if speed else "tok/s **no**")


def memory_table(data: dict) -> str:
    t = data["targets"]
    rows = ["| pair (reference / target) | base parameters | peak RSS: one base / two copies "
            "| memory ratio (above the runtime) | peak while sampling: ratio (above the runtime) "
            "| path sampler tok/s: one base / two copies "
            "| tok/s ratio (CPU-time ratio) | targets met (memory ≤ {m}, tok/s ≥ {s} on both clocks) | same rollouts, estimates "
            "| one mixed-adapter batch ÷ two passes (rows per role) |".format(
                m=t["memory_ratio_max"], s=t["tokens_per_s_ratio_min"]),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        s, c = r["shared"][0], r["copies"][0]
        mixed = ", ".join(f"{m['mixed_over_two_passes']:.2f}× ({m['rows_per_role']})" for m in r["mixed_batch"] or [])
        same = ("yes" if r["identical_rollouts"] else "**no**") + ", " + (
            "yes" if r["identical_estimates"] else "within 1e-4" if r["estimates_within_1e-4"] else
            f"**no**: {r['estimate_rollouts_diverged']} of {r['estimate_rollouts']} estimate rollouts drew another "
            "token (a float32 difference at an inverse-CDF boundary)")
        rows.append(f"| {r['pair']} | {_params(s.get('base_parameters'))} | {s['peak_rss_mb']:,.0f} / "
                    f"{c['peak_rss_mb']:,.0f} MB | **{r['memory_ratio']:.2f}** ({r['memory_ratio_above_runtime']:.2f}) "
                    f"| {r['sampling_memory_ratio']:.2f} ({r['sampling_memory_ratio_above_runtime']:.2f}) "
                    f"| {_fmt(r['tokens_per_s']['shared'])} / {_fmt(r['tokens_per_s']['copies'])} "
                    f"| **{r['tokens_per_s_ratio']:.2f}** ({r['tokens_per_cpu_s_ratio']:.2f}) | {_targets_met(r, t)} "
                    f"| {same} | {mixed or '–'} |")
    m = data["machine"]
    held = sorted(w["before_load"]["rss_mb"] for r in data["results"] for w in r["shared"] + r["copies"])
    runtime = f"{held[0]:,.0f}" if round(held[0]) == round(held[-1]) else f"{held[0]:,.0f}–{held[-1]:,.0f}"
    randoms = [
        f"`{b['pair']}` is the `{b['shape']}` shape of benchmarks/random_pairs.py ({b['config']['num_hidden_layers']} layers, width "
        f"{b['config']['hidden_size']}, vocabulary {b['config']['vocab_size']:,}) with random weights, saved as a "
        f"{b['checkpoint_dtype']} checkpoint and loaded in {data['settings']['dtype']} (each copy then its own "
        f"memory), against it + a random LoRA adapter (r = {b['lora']['r']}, α = {b['lora']['lora_alpha']} on "
        f"{'/'.join(x.split('_')[0] for x in b['lora']['target_modules'])}, B ~ N(0, {b['lora']['b_std']}²), "
        f"{b['lora']['parameters']:,} parameters); its prompts are two 16-word texts of the shape's "
        "word-level vocabulary, its judge a regular expression."
        for b in data.get("random_pairs") or []]
    return "\n".join(rows) + (
        f"\n\n`{data['command']}` — each way in a fresh subprocess, {m['cpu_threads']} torch thread(s), "
        f"{data['settings']['dtype']}, torch {m['torch']}, peft {m['peft']}; α = {data['alpha']:g}, "
        f"{data['settings']['rows']} rows × ≤ {data['settings']['tokens']} tokens, seed {data['settings']['seed']}, "
        f"the same prompts both ways; load average {m['load_average_start'][0]:.1f} at the start, "
        f"{m['load_average_end'][0]:.1f} at the end. Peak RSS is `ru_maxrss` of the whole subprocess, loading "
        f"included; \"peak while sampling\" is the peak from the end of loading on (`VmHWM` after a reset), which leaves out "
        f"loading's transients; \"above the runtime\" leaves out the {runtime} MB each process held before loading "
        f"(Python, torch, transformers, peft), which no sharing can save. "
        + " ".join(randoms)).rstrip()


def _held_out_coverage() -> tuple[dict[str, float | None], str]:
    """Coverage at 1,000 rollouts per method from the calibration run (the intervals as shipped,
    on prompts the widenings were not chosen on), by the AUROC run's method names."""
    path = RESULTS / "calibration.json"
    if not path.exists():
        return {}, ""
    data = json.loads(path.read_text())
    cells = {name.replace(": default", ""): by_budget.get("1000", {}) for name, by_budget in data["methods"].items()}
    return ({name: c.get("coverage") for name, c in cells.items()},
            f"{len(data['prompts'])} prompts × {len(data['seeds'])} seeds, `{data['command']}`")


def headline_table(data: dict) -> str:
    """The README's summary: each method at the largest budget of the AUROC run, with the interval
    coverage of the calibration run (held out) where it measured the method."""
    top = str(max(data["budgets"]))
    held, source = _held_out_coverage()
    rows = [f"| method | AUROC at {int(top):,} rollouts | median \\|log10(est/truth)\\| | interval coverage at 1,000 "
            "(held out) | rollouts to match naive at 100,000 |", "|---|---|---|---|---|"]
    naive = data["experiment"]["naive"].get(top, {})
    rows.append(f"| naive sampling | {_fmt(naive.get('auroc'))} | – | {_fmt(held.get('naive (exact simulation)'))} "
                "| 100,000 |")
    for name, by_budget in data["experiment"]["methods"].items():
        v = by_budget.get(top)
        if v is None:
            continue
        sav = data["experiment"]["savings"][name]
        b = sav.get("budget_matching_naive_100000")
        match = "not reached" if b is None else ("≤ " if b <= min(data["budgets"]) else "") + f"{b:,.0f}"
        rows.append(f"| {name} | {_fmt(v['auroc'])} | {_fmt(v['median_abs_log10_error'])} | "
                    f"{_fmt(held.get(name))} | {match} |")
    note = (f" Coverage: share of nominal 95% intervals containing the exact rate in the calibration run ({source}; "
            "docs/benchmarks.md, \"Do the intervals cover?\"); – where it did not run the method." if source else "")
    return "\n".join(rows) + f"\n\n`{data['command']}`; the protocol and bands are in docs/benchmarks.md." + note


# each table reads the full run's results, or the fast run's when there is no full one
TABLES: dict[str, tuple[tuple[str, ...], Callable[[dict], str]]] = {
    "sampler": (("sampler.json", "sampler_fast.json"), sampler_table),
    "auroc": (("auroc.json", "auroc_fast.json"), auroc_table),
    "errors": (("auroc.json", "auroc_fast.json"), error_table),
    "auroc-fast": (("auroc_fast.json",), auroc_table),
    "errors-fast": (("auroc_fast.json",), error_table),
    "detection": (("detection.json", "detection_fast.json"), detection_table),
    "lowprob-forward": (("lowprob_forward.json",), lowprob_forward_table),
    "map": (("map.json", "map_fast.json"), map_table),
    "map-fast": (("map_fast.json",), map_table),
    "lpe-families": (("lpe_families.json",), lpe_families_table),
    "workers": (("workers.json",), workers_table),
    "demo": (("demo.json",), demo_table),
    "demo-loaded": (("demo_loaded.json",), demo_loaded_table),
    "engine": (("engine.json",), engine_table),
    "serve": (("serve.json",), serve_table),
    "calibration": (("calibration.json", "calibration_fast.json"), calibration_table),
    "harmbench": (("harmbench.json", "harmbench_fast.json"), harmbench_table),
    "headline": (("auroc.json", "auroc_fast.json"), headline_table),
    "gpu": (("gpu.json", "gpu_tiny.json"), gpu_table),
    "gpu-status": (("gpu.json", "gpu_tiny.json"), gpu_status),
    "dtype-gap": (("dtype_gap.json",), dtype_gap_table),
    "compile": (("gpu_compile.json", "gpu_tiny_compile.json"), compile_table),
    "memory": (("memory.json",), memory_table),
}

DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


def render(documents: tuple[Path, ...] = DOCUMENTS) -> list[str]:
    """Render every table found in ``documents``; returns ``NAME (file)`` for each one rendered."""
    done = []
    for doc in documents:
        done += [f"{name} ({doc.relative_to(ROOT)})" for name in render_one(doc)]
    return done


def render_one(readme: Path) -> list[str]:
    text = readme.read_text()
    done = []
    for name, (files, fn) in TABLES.items():
        path = next((RESULTS / f for f in files if (RESULTS / f).exists()), None)
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.S)
        if path is None or not pattern.search(text):
            continue
        table = fn(json.loads(path.read_text()))
        text = pattern.sub(lambda m: m.group(1) + table + m.group(2), text)
        done.append(name)
    if text != readme.read_text():
        readme.write_text(text)
    return done


if __name__ == "__main__":
    print("rendered:", ", ".join(render()) or "nothing")
