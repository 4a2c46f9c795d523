"""Print the markdown tables of docs/lowprob.md from the benchmark JSON files.

    python benchmarks/lowprob_tables.py benchmarks/results/lowprob.json [more.json ...]
    python benchmarks/lowprob_tables.py --overview a.json b.json ...   # one summary row per file
"""

from __future__ import annotations

import json
import sys

import numpy as np

ORDER = ("naive", "itgis", "mhis", "qld", "gld", "constant")


def fmt(x: float) -> str:
    return f"{x:.3g}" if x < 1e3 else f"{x:.1e}"


def tables(report: dict) -> str:
    methods = [m for m in ORDER if m in report["summary"]]
    lines = [f"**{report['budget']} model calls per estimate** (raw / after the held-out affine fit)", "",
             "| pair | ground-truth inputs | targets (p range) | " + " | ".join(methods) + " |",
             "|---|---:|---|" + "---:|" * len(methods)]
    for p in report["pairs"]:
        probs = [t["probability"] for t in p["targets"]]
        cells = [f"{fmt(p['scores'][m]['loss'])} / {fmt(p['scores'][m]['loss_affine'])}" for m in methods]
        lines.append(f"| {p['model']}/{p['distribution']} | {p['ground_truth_inputs']:,} | "
                     f"{len(probs)} ({min(probs):.1e}–{max(probs):.1e}) | " + " | ".join(cells) + " |")
    s = report["summary"]
    for label, raw, aff in [("mean", "loss", "loss_affine"), ("median", "median_loss", "median_loss_affine")]:
        lines.append(f"| **{label}** | | | " + " | ".join(f"{fmt(s[m][raw])} / {fmt(s[m][aff])}" for m in methods)
                     + " |")
    zeros = {m: sum(p["scores"][m]["zero_estimates"] for p in report["pairs"] if m in p["scores"]) for m in methods}
    targets = sum(len(p["targets"]) for p in report["pairs"])
    lines.append(f"| **zero estimates** (of {targets}) | | | " + " | ".join(
        str(zeros[m]) if m != "constant" else "–" for m in methods) + " |")
    lines.append("| **median \\|log10 p̂/p\\|** (median over pairs) | | | " + " | ".join(
        f"{np.nanmedian([p['scores'][m]['median_abs_log10_error'] for p in report['pairs']]):.2f}"
        if m != "constant" else "–" for m in methods) + " |")
    lines.append("| **pairs won** | | | " + " | ".join(
        f"{s[m]['wins_raw']} / {s[m]['wins_affine']}" if m != "constant" else "–" for m in methods) + " |")
    return "\n".join(lines)


def overview(paths: list[str]) -> str:
    """One row per report: mean raw loss / mean affine loss and zero estimates for every method."""
    reports = [json.load(open(p)) for p in paths]
    methods = [m for m in ORDER if m in reports[0]["summary"]]
    lines = ["mean raw loss / median affine-fit loss over pairs (zero estimates)", "",
             "| run | targets | " + " | ".join(methods) + " |", "|---|---:|" + "---|" * len(methods)]
    for path, r in zip(paths, reports):
        s = r["summary"]
        zeros = {m: sum(p["scores"][m]["zero_estimates"] for p in r["pairs"] if m in p["scores"]) for m in methods}
        cells = [f"{fmt(s[m]['loss'])} / {fmt(s[m]['median_loss_affine'])}" + (f" ({zeros[m]} zero)" if zeros[m] else "")
                 for m in methods]
        lines.append(f"| {path.split('/')[-1]} (budget {r['budget']}, seed {r['seed']}) | "
                     f"{sum(len(p['targets']) for p in r['pairs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--overview":
        print(overview(sys.argv[2:]))
    else:
        for path in sys.argv[1:]:
            print(tables(json.load(open(path))))
            print()
