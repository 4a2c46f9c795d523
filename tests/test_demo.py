"""The demo's prompt choice."""

from __future__ import annotations

from tailscope.demo import pick_prompts


def test_pick_prompts_spreads_over_the_rare_range():
    truth = {f"p{i}": {"rate": 10.0 ** -(i / 2)} for i in range(20)}
    chosen = pick_prompts(truth, 4)
    rates = [truth[c]["rate"] for c in chosen]
    assert len(chosen) == 4 and all(1e-6 <= r <= 1e-3 for r in rates)
    assert rates == sorted(rates) and rates[0] < 1e-5 and rates[-1] > 1e-4
    assert pick_prompts({"a": {"rate": 0.5}}, 3) == ["a"]
