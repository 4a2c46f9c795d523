"""benchmarks/bench_dtype_gap.py's RescoredSource: the same draws and verdicts, every density from another pair."""

from __future__ import annotations

import pytest

from tailscope.estimators import StoreSource, importance, mis
from tailscope.judges import make_judge
from tailscope.sampling import PathSampler
from tailscope.scoring import Scorer
from tailscope.store import RunStore, run_config

from benchmark_scripts import load_benchmark


def test_rescoring_with_the_same_pair_gives_the_same_estimates(tiny_pair, prompts, tmp_path):
    bench = load_benchmark("bench_dtype_gap")
    sampler = PathSampler(tiny_pair, max_new_tokens=8)
    judge = make_judge("regex:^[a-m]")
    with RunStore.open(tmp_path / "run.sqlite", run_config(sampler, judge=judge)) as store:
        source = StoreSource(store, sampler, judge)
        rescored = bench.RescoredSource(source, Scorer(tiny_pair, chat=sampler.chat))
        for p in prompts[:2]:
            for run in (lambda s: importance(s, p, 24, proposal=0.0),
                        lambda s: mis(s, p, 24, schedule="fixed", switch_after=3)):
                a, b = run(source), run(rescored)
                assert a.rollouts == b.rollouts and a.hits == b.hits
                assert b.rate == pytest.approx(a.rate, rel=1e-3, abs=1e-12)
        stored = store.count()
        proposal = bench.Proposal.parse("a=0")  # importance drew 24 of it above
        got = rescored.draw(prompts[0], proposal, 24, (0.5, 1.0))
        want = source.draw(prompts[0], proposal, 24, (0.5, 1.0))
        assert store.count() == stored  # nothing new was drawn: the rollouts are the stored ones
        for o, w in zip(got, want):
            assert o.rollout.token_ids == w.rollout.token_ids and o.flagged == w.flagged
            for field in ("logprob", "logprob_reference", "logprob_target"):
                assert getattr(o.rollout, field) == pytest.approx(getattr(w.rollout, field), abs=1e-4)
            assert o.rollout.logprob_grid == pytest.approx(w.rollout.logprob_grid, abs=1e-4)
