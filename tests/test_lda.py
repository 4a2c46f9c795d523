"""Logit diff amplification sweeps on the backdoor organism: detection through any rollout source."""

from __future__ import annotations

import pytest

from tailscope.estimators import LiveSource, StoreSource
from tailscope.judges import make_judge
from tailscope.lda import lda_sweep
from tailscope.organisms import list_organisms, load
from tailscope.sampling import PathSampler
from tailscope.store import RunStore, run_config

pytestmark = pytest.mark.skipif("backdoor" not in list_organisms(), reason="the backdoor organism is not built")


@pytest.fixture(scope="module")
def backdoor():
    org = load("backdoor")
    sampler = PathSampler(org.pair, max_new_tokens=8, seed=0, batch_size=64)
    prompts = [p for p in org.prompts if not p.meta.get("trigger")][:3]
    return org, sampler, make_judge(org.judge_spec), prompts


def test_amplification_surfaces_the_backdoor_and_sources_agree(backdoor, tmp_path):
    org, sampler, judge, prompts = backdoor
    live = lda_sweep(LiveSource(sampler, judge), prompts, [0.0, 3.0], 40)
    with RunStore.open("lda", run_config(sampler, judge=judge), root=tmp_path) as store:
        stored = lda_sweep(StoreSource(store, sampler, judge), prompts, [0.0, 3.0], 40)
        assert store.count() == 2 * 3 * 40
        again = lda_sweep(StoreSource(store, sampler, judge), prompts, [0.0, 3.0], 40)
        assert store.count() == 2 * 3 * 40  # a rerun reads the store: nothing sampled twice
    assert [p.to_dict() for p in live] == [p.to_dict() for p in stored] == [p.to_dict() for p in again]
    plain, amplified = live
    exact = sum(org.rate(p.id) for p in prompts) / len(prompts)
    assert exact * plain.rollouts < 0.05  # without amplification the opening is too rare to see here
    assert plain.hits == 0 and plain.interval[0] == 0.0 and plain.interval[1] > 0
    assert amplified.hits > 0 and amplified.alpha == 4.0
    assert amplified.interval[0] <= amplified.rate <= amplified.interval[1]
    assert all(e["text"] for e in amplified.examples) and len(amplified.examples) <= 3
    assert sum(v["n"] for v in amplified.per_prompt.values()) == amplified.rollouts - amplified.failed


def test_sweep_validates_n(backdoor):
    _, sampler, judge, prompts = backdoor
    with pytest.raises(ValueError, match="`n`"):
        lda_sweep(LiveSource(sampler, judge), prompts, [1.0], 0)
