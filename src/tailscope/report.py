"""Reports: PNG plots and a self-contained HTML page of per-prompt estimates.

Plots: the rate along the path with LPE's fit and its band (per prompt), and estimate vs ground
truth (when it is known), with intervals. The HTML embeds the PNGs, so one file travels alone.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .estimators import Estimate, clopper_pearson, explain, zero_hit_upper_bound

__all__ = ["error_summary", "plot_estimates_vs_truth", "plot_path", "run_summary", "write_report"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_path(est: Estimate, out: Path, truth: float | None = None, alpha_truth: Mapping[str, float] | None = None) -> Path:
    """Rate vs α: measured points with exact intervals, the fitted curve (LPE), the estimate at α = 1."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    pts = est.diagnostics.get("points", [])
    for p in pts:
        if not p["n"]:
            continue
        lo, hi = clopper_pearson(p["hits"], p["n"])
        if p["hits"]:
            r = p["hits"] / p["n"]
            ax.errorbar([p["alpha"]], [r], yerr=[[r - lo], [hi - r]], fmt="o", color="C0", ms=4, capsize=2)
        else:  # no hits: only an upper bound, drawn where it is (a rate of 0 has no place on a log axis)
            ax.plot([p["alpha"]], [zero_hit_upper_bound(p["n"])], "v", color="C0", ms=5, mfc="none")
    curve = est.diagnostics.get("curve")
    if curve:
        ax.plot(curve["alpha"], curve["rate"], "-", color="C1", label=f"fit ({est.settings.get('family', '')})")
    if alpha_truth:
        xs = sorted(float(a) for a in alpha_truth)
        ax.plot(xs, [alpha_truth[f"{a:g}"] if f"{a:g}" in alpha_truth else alpha_truth[str(a)] for a in xs],
                ":", color="k", lw=1, label="exact rate")
    lo, hi = est.interval
    if est.upper_bound_only:
        ax.plot([1.0], [hi], "v", color="C3", label=f"{est.method} upper bound")
    else:
        ax.errorbar([1.0], [est.rate], yerr=[[max(0.0, est.rate - max(lo, 1e-300))], [max(0.0, hi - est.rate)]],
                    fmt="s", color="C3", capsize=3, label=f"{est.method} estimate")
    if truth is not None and truth > 0:
        ax.plot([1.0], [truth], "*", color="k", ms=10, label="truth")
    ax.set_yscale("log")
    ax.set_xlabel("α (0 = reference, 1 = target)")
    ax.set_ylabel("behaviour rate")
    ax.set_title(f"prompt {est.prompt_id}", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_estimates_vs_truth(estimates: Sequence[Estimate], truth: Mapping[str, float], out: Path) -> Path:
    """Estimate vs true rate on log axes, with intervals; upper bounds drawn as down-triangles."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.4))
    vals = [t for t in truth.values() if t > 0]
    lo_all = min(vals + [e.interval[1] for e in estimates if e.interval[1] > 0], default=1e-8) / 3
    for e in estimates:
        t = truth.get(e.prompt_id or "")
        if t is None or t <= 0:
            continue
        if e.upper_bound_only:
            ax.plot([t], [e.interval[1]], "v", color="C3", ms=4)
        else:
            y = max(e.rate, lo_all)
            ax.errorbar([t], [y], yerr=[[max(0.0, y - max(e.interval[0], lo_all))], [max(0.0, e.interval[1] - y)]],
                        fmt="o", color="C0", ms=3, capsize=1.5, alpha=0.8)
    ax.plot([lo_all, 1], [lo_all, 1], "k--", lw=0.8)
    for f in (3, 1 / 3):
        ax.plot([lo_all, 1], [lo_all * f, f], ":", color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo_all, 1)
    ax.set_ylim(lo_all, 1)
    ax.set_xlabel("true rate")
    ax.set_ylabel("estimate")
    methods = sorted({e.method for e in estimates})
    ax.set_title(f"{', '.join(methods)}: estimate vs truth (dotted: ×3)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _flag_cell(e: Estimate) -> str:
    return " ".join(f'<span title="{html.escape(explain(f))}">{html.escape(f)}</span>' for f in e.flags)


def _flag_summary(estimates: Sequence[Estimate]) -> str:
    from collections import Counter

    counts = Counter(f for e in estimates for f in e.flags)
    flagged = sum(bool(e.flags) for e in estimates)
    if not flagged:
        return "no estimate here is flagged"
    return f"{flagged} of {len(estimates)} estimates are flagged (" + ", ".join(
        f"{html.escape(f)}: {n}" for f, n in counts.most_common()) + ")"


def run_summary(estimates: Sequence[Estimate], method: str, *, calibration_rollouts: int = 0) -> str:
    """One line a newcomer can read: the method, the rollouts spent, how many prompts are flagged and why."""
    from collections import Counter

    spent = sum(e.total_rollouts for e in estimates) + calibration_rollouts
    search = f" ({calibration_rollouts:,} of them on the calibration search)" if calibration_rollouts else ""
    counts = Counter(f for e in estimates for f in e.flags)
    flagged = sum(bool(e.flags) for e in estimates)
    why = "; ".join(f"{f} ×{n}: {explain(f)}" for f, n in counts.most_common())
    trust = (f"{flagged} of {len(estimates)} prompts flagged — {why}" if flagged
             else f"none of the {len(estimates)} prompts flagged")
    return f"summary: {method}; {spent:,} rollouts spent{search}; {trust}."


def error_summary(estimates: Sequence[Estimate], truth: Mapping[str, float]) -> dict[str, Any]:
    """Median |log10(estimate / truth)| over prompts with a point estimate, interval coverage, and
    coverage among the estimates no diagnostic flagged."""
    errs, cover, clean = [], [], []
    for e in estimates:
        t = truth.get(e.prompt_id or "")
        if t is None or t <= 0:
            continue
        cover.append(e.covers(t))
        if not e.flags:
            clean.append(e.covers(t))
        if not e.upper_bound_only and e.rate > 0:
            errs.append(abs(math.log10(e.rate / t)))
    median = statistics.median(errs) if errs else None
    return {"prompts": len(cover), "with_point_estimate": len(errs), "median_abs_log10_error": median,
            "coverage": sum(cover) / len(cover) if cover else None, "flagged": len(cover) - len(clean),
            "coverage_unflagged": sum(clean) / len(clean) if clean else None}


def _estimates_block(estimates: Sequence[Estimate], rows: Sequence[str], figures: Sequence[str]) -> str:
    if not estimates:
        return ""
    level = int(100 * estimates[0].confidence)
    return f"""<p>Each estimate is of the rate at which the target (α = 1) shows the behaviour, with its {level}%
interval and the rollouts it cost. An estimate marked “&lt;” saw no hits and is an upper bound. A flag says why
an interval should not be trusted (hover for the reason); {_flag_summary(estimates)}.</p>
<table><tr><th>prompt</th><th>text</th><th>method</th><th>estimate [interval]</th><th>hits</th><th>rollouts</th>
<th>truth</th><th>est/truth</th><th>flags</th><th>completions (hits first)</th></tr>
{''.join(rows)}</table>
<h2>Plots</h2>{''.join(figures) or '<p>No plots: no path points or ground truth.</p>'}"""


def write_report(
    estimates: Sequence[Estimate],
    out_dir: str | Path,
    *,
    title: str = "tailscope report",
    truth: Mapping[str, float] | None = None,
    alpha_truth: Mapping[str, Mapping[str, float]] | None = None,
    config: Mapping[str, Any] | None = None,
    max_path_plots: int = 24,
    prompts: Mapping[str, str] | None = None,
    examples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    sections: Sequence[str] = (),
) -> Path:
    """Write ``report.html`` (self-contained), the PNGs and ``estimates.json`` into ``out_dir``.

    ``prompts`` (text by prompt id) and ``examples`` (completions by prompt id, each with ``text`` and
    ``flagged``) are shown beside each estimate; ``sections`` are further HTML blocks (a sweep, say)
    placed before the run configuration.
    """
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    truth = dict(truth or {})
    rows, figures = [], []
    for e in estimates:
        t = truth.get(e.prompt_id or "")
        err = "" if t is None or e.upper_bound_only or e.rate <= 0 or t <= 0 else f"{e.rate / t:.2g}×"
        text = html.escape((prompts or {}).get(e.prompt_id or "", ""))
        shown = "".join(f"<div class=ex>{'<b>hit</b> ' if x.get('flagged') else ''}{html.escape(x['text'][:300])}</div>"
                        for x in (examples or {}).get(e.prompt_id or "", []))
        rows.append(
            f"<tr><td>{html.escape(str(e.prompt_id))}</td><td class=t>{text}</td><td>{e.method}</td>"
            f"<td>{html.escape(e.describe())}</td><td>{e.hits}</td><td>{e.total_rollouts:,}</td>"
            f"<td>{'' if t is None else f'{t:.2g}'}</td><td>{err}</td><td class='flags'>{_flag_cell(e)}</td>"
            f"<td class=t>{shown}</td></tr>"
        )
    if truth:
        by_method: dict[str, list[Estimate]] = {}
        for e in estimates:
            by_method.setdefault(e.method, []).append(e)
        for method, ests in sorted(by_method.items()):
            png = plot_estimates_vs_truth(ests, truth, out / "img" / f"truth_{method}.png")
            s = error_summary(ests, truth)
            figures.append(f"<figure>{_img(png)}<figcaption>{method}: median |log10 error| "
                           f"{s['median_abs_log10_error'] if s['median_abs_log10_error'] is None else round(s['median_abs_log10_error'], 3)}, "
                           f"coverage {s['coverage']:.0%} over {s['prompts']} prompts</figcaption></figure>")
    path_plots = [e for e in estimates if e.diagnostics.get("points")][:max_path_plots]
    for i, e in enumerate(path_plots):
        png = plot_path(e, out / "img" / f"path_{i:03d}_{e.method}.png", truth.get(e.prompt_id or ""),
                        (alpha_truth or {}).get(e.prompt_id or ""))
        figures.append(f"<figure>{_img(png)}</figure>")
    (out / "estimates.json").write_text(json.dumps([e.to_dict() for e in estimates], indent=1) + "\n")
    cfg = html.escape(json.dumps(config or {}, indent=1, default=str))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td.flags{{color:#b00;text-align:left}}figure{{display:inline-block;margin:6px}}
pre{{background:#f6f6f6;padding:8px;font-size:11px;max-height:300px;overflow:auto}}
td.t{{text-align:left;max-width:360px}}.ex{{font-family:monospace;font-size:11px;white-space:pre-wrap;margin:2px 0}}</style></head><body>
<h1>{html.escape(title)}</h1>
{_estimates_block(estimates, rows, figures)}
{''.join(sections)}
<h2>Run configuration</h2><pre>{cfg}</pre></body></html>"""
    report = out / "report.html"
    report.write_text(page, encoding="utf-8")
    return report
