"""Reports: plots and HTML from estimates, including estimates far below the truth."""

from __future__ import annotations

from tailscope.estimators import Estimate
from tailscope.report import error_summary, write_report


def test_report_handles_tiny_estimates_bounds_and_paths(tmp_path):
    path = {"points": [{"alpha": 0.0, "n": 50, "hits": 20}, {"alpha": 0.5, "n": 50, "hits": 0}],
            "curve": {"alpha": [0.0, 0.5, 1.0], "rate": [0.4, 0.01, 1e-4]}}
    ests = [
        Estimate(method="lpe", prompt_id="a", rate=1e-12, interval=(1e-14, 1e-10), diagnostics=path,
                 settings={"family": "log-linear"}),
        Estimate(method="lpe", prompt_id="b", rate=0.0, interval=(0.0, 3e-3), upper_bound_only=True),
        Estimate(method="mis", prompt_id="a", rate=2e-5, interval=(1e-5, 4e-5)),
    ]
    page = write_report(ests, tmp_path, truth={"a": 1e-5, "b": 1e-6}, alpha_truth={"a": {"0": 0.4, "1": 1e-5}})
    html = page.read_text()
    assert html.count("data:image/png;base64") == 3 and "&lt; 0.003 (0 hits)" in html
    s = error_summary([e for e in ests if e.method == "mis"], {"a": 5e-6})
    assert s["coverage"] == 0.0 and abs(s["median_abs_log10_error"] - 0.60206) < 1e-4
    assert error_summary([e for e in ests if e.method == "mis"], {"a": 1e-5})["coverage"] == 1.0
