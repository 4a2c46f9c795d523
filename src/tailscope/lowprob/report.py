"""Tables and plots of the low-probability benchmark (METHODS.md §3 scoring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_results", "results_table", "summarise"]

ORDER = ("naive", "itgis", "mhis", "qld", "gld", "constant")


def summarise(pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method: mean and median loss over pairs (raw and affine) and how many pairs it wins."""
    methods = [m for m in ORDER if any(m in p["scores"] for p in pairs)]
    summary = {}
    for m in methods:
        raw = [p["scores"][m]["loss"] for p in pairs if m in p["scores"]]
        affine = [p["scores"][m]["loss_affine"] for p in pairs if m in p["scores"]]
        summary[m] = {"loss": float(np.mean(raw)), "loss_affine": float(np.mean(affine)),
                      "median_loss": float(np.median(raw)), "median_loss_affine": float(np.median(affine)),
                      "wins_raw": 0, "wins_affine": 0, "pairs": len(raw)}
    for p in pairs:
        contenders = {m: s for m, s in p["scores"].items() if m != "constant"}
        if contenders:
            summary[min(contenders, key=lambda m: contenders[m]["loss"])]["wins_raw"] += 1
            summary[min(contenders, key=lambda m: contenders[m]["loss_affine"])]["wins_affine"] += 1
    return summary


def results_table(report: dict[str, Any]):
    """A rich table: one row per (model, distribution), raw / affine loss per method."""
    from rich.table import Table

    methods = [m for m in ORDER if m in report["summary"]]
    table = Table(title=f"Itakura–Saito loss, raw / affine (budget {report['budget']} calls)")
    table.add_column("pair")
    table.add_column("inputs", justify="right")
    for m in methods:
        table.add_column(m, justify="right")
    for p in report["pairs"]:
        cells = [f"{p['scores'][m]['loss']:.2f} / {p['scores'][m]['loss_affine']:.2f}" if m in p["scores"] else "-"
                 for m in methods]
        table.add_row(f"{p['model']}/{p['distribution']}", f"{p['ground_truth_inputs']:.2e}", *cells)
    s = report["summary"]
    table.add_row("mean", "", *[f"{s[m]['loss']:.2f} / {s[m]['loss_affine']:.3g}" for m in methods], style="bold")
    table.add_row("median", "", *[f"{s[m]['median_loss']:.2f} / {s[m]['median_loss_affine']:.2f}" for m in methods],
                  style="bold")
    table.add_row("wins", "", *[f"{s[m]['wins_raw']} / {s[m]['wins_affine']}" for m in methods], style="bold")
    return table


def plot_results(report: dict[str, Any], path: str | Path) -> Path:
    """Bars of the median loss over pairs per method (raw and affine) and, per distribution, the
    median raw loss over models (medians, because one unstable affine fit can dominate a mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in ORDER if m in report["summary"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(methods))
    s = report["summary"]
    axes[0].bar(x - 0.2, [s[m]["median_loss"] for m in methods], 0.4, label="raw")
    axes[0].bar(x + 0.2, [s[m]["median_loss_affine"] for m in methods], 0.4, label="affine fit (held out)")
    axes[0].set_xticks(x, methods)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("median Itakura–Saito loss over pairs")
    axes[0].legend()
    dists = sorted({p["distribution"] for p in report["pairs"]})
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        vals = [np.median([p["scores"][m]["loss"] for p in report["pairs"]
                         if p["distribution"] == d and m in p["scores"]]) for d in dists]
        axes[1].bar(np.arange(len(dists)) + (i - len(methods) / 2 + 0.5) * width, vals, width, label=m)
    axes[1].set_xticks(np.arange(len(dists)), dists)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("raw loss, median over models")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Low-probability estimation, {report['budget']} model calls per estimate")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
