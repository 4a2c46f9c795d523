"""The interval widenings the estimators ship with are the ones chosen on the tuning split, and the
choice itself (benchmarks/tune_intervals.py) picks what its docstring says."""

from __future__ import annotations

import json
import math

import pytest
from benchmark_scripts import ROOT, load_benchmark

from tailscope.estimators import TREND_ERROR
from tailscope.estimators._flags import weight_flags
from tailscope.estimators._weights import hit_interval
from tailscope.estimators.mis import TAIL_WIDENING

RESULTS = ROOT / "benchmarks" / "results"


def test_the_shipped_widenings_are_the_measured_ones():
    chosen = json.loads((RESULTS / "interval_tuning.json").read_text())
    assert chosen["target"] >= 0.95
    for kind in ("switching", "full"):
        assert chosen["tail_widening"][kind]["met"] and TAIL_WIDENING[kind] == chosen["tail_widening"][kind]["chosen"]
    assert chosen["trend_error"]["met"] and TREND_ERROR == chosen["trend_error"]["chosen"]
    tuning = json.loads((RESULTS / "calibration_tuning.json").read_text())
    assert tuning["split"] == "tuning" and tuning["prompts"] == chosen["prompts"]
    scored = json.loads((RESULTS / "calibration.json").read_text())
    assert scored["split"] == "scored" and not set(tuning["prompts"]) & set(scored["prompts"])


def _row(truth, rate, low, high, hits=100, rollouts=1000, flags=(), **diagnostics):
    return {"truth": truth, "rate": rate, "low": low, "high": high, "bound": False, "hits": hits,
            "rollouts": rollouts, "flags": list(flags), "diagnostics": {"ess_hits": 20.0, **diagnostics}}


def test_the_tail_widening_is_the_smallest_that_covers():
    tune = load_benchmark("tune_intervals")
    # hits 10% of rollouts, estimate 1e-7: 6 decades bridged; the truth sits 0.5 decades above the top
    covered = _row(1e-7, 1e-7, 5e-8, 2e-7)
    missed = _row(2e-7 * 10**0.5, 1e-7, 5e-8, 2e-7)
    out = tune.smallest({"1000": [covered] * 19 + [missed] * 1 + [missed]}, tune.TAIL_GRID, tune.mis_interval,
                        tune.mis_flagged, 0.95)
    # 0.5 decades over 6 bridged: 0.0833 per decade, so the grid's 0.09
    assert out["met"] and out["chosen"] == pytest.approx(0.09)
    assert out["at_zero"]["1000"]["coverage_unflagged"] == pytest.approx(19 / 21)
    low, high = tune.mis_interval(missed, out["chosen"])
    assert low == 5e-8 and high >= missed["truth"]


def test_the_script_widens_as_the_estimator_does():
    tune = load_benchmark("tune_intervals")
    sampled = hit_interval(1e-6, 3e-7, 40.0, 0.95)
    widened = hit_interval(1e-6, 3e-7, 40.0, 0.95, 0.25 * 5.0)
    row = _row(1e-6, 1e-6, sampled.low, sampled.high, hits=100, rollouts=1000)  # bridge: log10(0.1 / 1e-6) = 5
    assert tune.mis_interval(row, 0.25) == pytest.approx((widened.low, widened.high))
    assert widened.low == sampled.low and widened.high == pytest.approx(sampled.high * 10**1.25)
    assert hit_interval(0.5, 0.1, 40.0, 0.95, 3.0).high == 1.0  # never past a rate of 1


def test_the_trend_error_is_the_smallest_that_covers():
    tune = load_benchmark("tune_intervals")
    # the bootstrap interval spans 0.2 decades around 1e-4; the truth is 1 decade lower; α_last = 0.8
    d = {"fit_alpha_last": 0.8, "bootstrap_used": 400, "monotone_bound": 1e-2, "bootstrap_interval": [8e-5, 1.25e-4]}
    rows = [_row(1e-5, 1e-4, 8e-5, 1.25e-4, **d)]
    out = tune.smallest({"300": rows}, tune.TREND_GRID, tune.lpe_interval, lambda r: bool(r["flags"]), 0.95)
    # covered once 1.96 · c · 0.2 · ln 10 ≥ ln 10 (less the bootstrap's own 0.1 decades in quadrature): c ≈ 2.54
    assert out["met"] and out["chosen"] == 2.75
    lo, hi = tune.lpe_interval(rows[0], out["chosen"])
    assert lo <= 1e-5 and hi <= 1e-2 * (1 + 1e-12)


def test_pooled_mis_is_not_flagged_by_khat_but_is_is():
    diag = {"khat": 1.5, "khat_hits": 2.0, "ess_hits": 5.0, "khat_contrib": 9.0}
    assert "pareto_k>0.7" not in weight_flags(diag, 40, pooled=True)
    assert "pareto_k>0.7" in weight_flags(diag, 40, pooled=False)
    assert weight_flags({**diag, "ess_hits": 1.0}, 40, pooled=True) == ["low_ess"]


@pytest.mark.parametrize("value", [-1.0, math.nan])
def test_lpe_refuses_a_negative_trend_error(value):
    from tailscope.estimators import lpe

    with pytest.raises(ValueError, match="trend_error"):
        lpe(None, None, 10, trend_error=value)
