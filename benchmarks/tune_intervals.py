"""Choose the interval widenings the estimators ship with, on prompts that are never scored.

Input: the calibration suite's tuning split (``tailscope evaluate calibration --split tuning``),
the same protocol as the scored runs on prompts neither of them scores. Two choices are made,
each the smallest value under which the unflagged intervals cover the truth in at least
``--target`` of the tuning cases at every budget:

* **path MIS's unseen weight tail** (``TAIL_WIDENING`` in ``tailscope/estimators/mis.py``):
  decades added to the interval's upper end per decade the weights bridge (log10 of the hits'
  share of rollouts over the estimate). A heavy-tailed weighted mean is most often *below* the
  truth — the weights that carry the mean are the ones rarely drawn — and the more decades the
  weights bridge, the further. Chosen separately for walks that switch to the target after a
  few tokens (the default) and for full-reply mixtures.
* **LPE's trend error** (``TREND_ERROR`` in ``tailscope/estimators/extrapolation.py``): decades
  of error per unit of α extrapolated, added in quadrature to the bootstrap interval.

Rows keep the intervals before widening (``sampled_interval``, ``bootstrap_interval``), so each
widening is recomputed here with the estimators' own functions, whatever was shipped when the
suite ran; path MIS's flags are recomputed with the shipped rules. Writes
``benchmarks/results/interval_tuning.json``; ``tests/test_interval_tuning.py`` checks that the
shipped constants are the ones chosen here::

    python benchmarks/tune_intervals.py [benchmarks/results/calibration_tuning.json] [--target 0.95]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tailscope.estimators._flags import weight_flags
from tailscope.estimators._weights import raised
from tailscope.estimators.extrapolation import trend_sd, widen_by_trend
from tailscope.estimators.mis import bridge_decades

HERE = Path(__file__).resolve().parent
MIS = {"switching": "mis (switching, tuned): default", "full": "mis"}
LPE = "lpe"
TAIL_GRID = tuple(round(x, 3) for x in np.arange(0.0, 0.501, 0.01))
TREND_GRID = tuple(round(x, 2) for x in np.arange(0.0, 12.01, 0.25))


def _number(x) -> float:
    if isinstance(x, str):
        return math.inf if x == "inf" else -math.inf
    return math.nan if x is None else float(x)


def mis_interval(row: dict, per_decade: float) -> tuple[float, float]:
    """Path MIS's interval with ``per_decade`` decades of upper reach per decade bridged."""
    d = row["diagnostics"]
    low, high = d.get("sampled_interval") or (row["low"], row["high"])
    if row["bound"] or row["rate"] <= 0:
        return row["low"], row["high"]
    bridge = d.get("bridge_decades")
    if bridge is None:  # a row from before the widening: every rollout of this suite is judged
        bridge = bridge_decades(row["hits"], row["rollouts"], row["rate"])
    return low, raised(high, per_decade * bridge)


def mis_flagged(row: dict) -> bool:
    """Path MIS's flags under the shipped rules, from the row's diagnostics."""
    if row["bound"]:
        return True
    diagnostics = {k: _number(v) for k, v in row["diagnostics"].items() if not isinstance(v, list)}
    return bool(weight_flags(diagnostics, row["hits"], pooled=True))


def lpe_interval(row: dict, trend_error: float, confidence: float = 0.95) -> tuple[float, float]:
    """LPE's interval with ``trend_error`` (decades per unit of α extrapolated), as ``lpe`` builds it."""
    d = row["diagnostics"]
    spread = d.get("bootstrap_interval")
    if row["bound"] or d.get("fit_alpha_last") is None or d.get("bootstrap_used", 0) < 20:
        return row["low"], row["high"]
    if spread is None and d.get("trend_sd_decades"):
        return row["low"], row["high"]  # widened by a shape's error the row does not undo
    cap = math.log(d["monotone_bound"]) if d.get("monotone_bound") else math.inf
    return widen_by_trend(spread or (row["low"], row["high"]), math.log(row["rate"]),
                          trend_sd(trend_error, d["fit_alpha_last"]), cap, confidence)


def smallest(cells: dict[str, list[dict]], grid: Sequence[float], interval: Callable[[dict, float], tuple],
             flagged: Callable[[dict], bool], target: float) -> dict:
    """The smallest grid value at which every cell's unflagged coverage is ≥ target."""
    table = []
    for value in grid:
        out = {}
        for name, rows in cells.items():
            clean = [r for r in rows if not flagged(r)]
            ends = [interval(r, value) for r in clean]
            cover = [lo <= r["truth"] <= hi for r, (lo, hi) in zip(clean, ends)]
            widths = [math.log10(hi / lo) for lo, hi in ends if lo > 0]
            out[name] = {"coverage_unflagged": float(np.mean(cover)) if cover else None,
                         "flagged_share": 1 - len(clean) / len(rows) if rows else None,
                         "median_width_decades": float(np.median(widths)) if widths else None}
        ok = all(c["coverage_unflagged"] is None or c["coverage_unflagged"] >= target for c in out.values())
        table.append({"value": value, "ok": ok, "cells": out})
    passing = [t for t in table if t["ok"]]
    chosen = passing[0] if passing else table[-1]
    return {"chosen": chosen["value"], "met": bool(passing), "at_chosen": chosen["cells"],
            "at_zero": table[0]["cells"], "grid": [{"value": t["value"], "ok": t["ok"]} for t in table]}


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tuning", nargs="?", type=Path, default=HERE / "results" / "calibration_tuning.json")
    ap.add_argument("--target", type=float, default=0.95, help="coverage to reach on the tuning cases")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "interval_tuning.json")
    args = ap.parse_args(argv)
    data = json.loads(args.tuning.read_text())
    if data.get("split") != "tuning":
        raise SystemExit(f"{args.tuning} is not a tuning split (run `tailscope evaluate calibration --split tuning`)")
    methods, budgets = data["methods"], [str(b) for b in data["budgets"]]
    result = {"source": data["command"], "prompts": data["prompts"], "seeds": data["seeds"], "budgets": budgets,
              "target": args.target, "tail_widening": {}}
    for kind, name in MIS.items():
        result["tail_widening"][kind] = smallest({b: methods[name][b]["rows"] for b in budgets}, TAIL_GRID,
                                                 mis_interval, mis_flagged, args.target)
    result["trend_error"] = smallest({b: methods[LPE][b]["rows"] for b in budgets}, TREND_GRID, lpe_interval,
                                     lambda r: bool(r["flags"]), args.target)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    tw = result["tail_widening"]
    print(f"MIS tail widening: switching {tw['switching']['chosen']}, full {tw['full']['chosen']} decades per "
          f"decade bridged; LPE trend error {result['trend_error']['chosen']} decades per unit α -> {args.out}")
    return result


if __name__ == "__main__":
    main()
