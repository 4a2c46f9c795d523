"""Estimators against the refusal organism's exact ground truth (fixed seeds).

The organism's behaviour is decided by the reply's opening, so its exact rates hold for any reply
limit longer than the openings: these tests sample short replies to stay fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tailscope.estimators import LiveSource, importance, lpe, mis, naive
from tailscope.judges import make_judge
from tailscope.organisms import list_organisms
from tailscope.sampling import PathSampler

needs_refusal = pytest.mark.skipif("refusal" not in list_organisms(), reason="the refusal organism is not built")
needs_backdoor = pytest.mark.skipif("backdoor" not in list_organisms(), reason="the backdoor organism is not built")
pytestmark = pytest.mark.slow  # statistical checks on the organisms: make test-all

SHORT = 12


@pytest.fixture(scope="module")
def refusal():
    from tailscope.organisms import load

    return load("refusal")


@pytest.fixture(scope="module")
def backdoor():
    from tailscope.organisms import load

    return load("backdoor")


def _source(org, seed):
    return LiveSource(PathSampler(org.pair, max_new_tokens=SHORT, seed=seed, batch_size=256), make_judge(org.judge_spec))


def _prompts_between(org, low, high, k):
    chosen = sorted((v["rate"], pid) for pid, v in org.ground_truth.items() if low <= v["rate"] <= high)
    step = max(1, len(chosen) // k)
    by_id = {p.id: p for p in org.prompts}
    return [(by_id[pid], rate) for rate, pid in chosen[::step][:k]]


@needs_backdoor
@pytest.mark.parametrize("proposal", ["a=2", "a=1.5;mix=0.5"])
def test_importance_sampling_from_an_amplified_proposal(backdoor, proposal):
    """LDA's amplified distribution is a valid IS proposal: unbiased for the after model's rate."""
    cases = [(p, r) for p, r in _prompts_between(backdoor, 1e-3, 0.5, 2) if not p.meta.get("trigger")]
    assert cases
    estimates = []
    for prompt, truth in cases:
        ests = [importance(_source(backdoor, s), prompt, 150, proposal=proposal) for s in range(16)]
        rates = np.array([e.rate for e in ests])
        se = rates.std(ddof=1) / math.sqrt(len(rates))
        assert abs(rates.mean() - truth) <= 4 * se + 0.1 * truth, (prompt.id, rates.mean(), truth, se)
        estimates += [e.covers(truth) for e in ests]
    assert np.mean(estimates) >= 0.8


@needs_backdoor
def test_naive_is_unbiased_on_common_rates(backdoor):
    cases = [(p, r) for p, r in _prompts_between(backdoor, 1e-3, 0.5, 2) if not p.meta.get("trigger")]
    for prompt, truth in cases:
        rates = np.array([naive(_source(backdoor, s), prompt, 1500).rate for s in range(8)])
        se = max(rates.std(ddof=1), math.sqrt(truth / 1500)) / math.sqrt(len(rates))
        assert abs(rates.mean() - truth) <= 3.5 * se, (prompt.id, rates.mean(), truth)


@needs_refusal
def test_mis_is_unbiased_and_covers_on_the_most_common_rates(refusal):
    """MIS with a fixed allocation on the path's last points, on the organism's highest rates
    (about 6e-4). Measured coverage there is lower than on the tabular path (about 0.8): the
    importance weights of this organism are far more spread (see docs/organisms.md)."""
    cases = _prompts_between(refusal, 4e-4, 1e-2, 3)
    covers = []
    for prompt, truth in cases:
        ests = [mis(_source(refusal, s), prompt, 300, schedule="fixed", grid=(0.7, 0.8, 0.9)) for s in range(6)]
        rates = np.array([e.rate for e in ests])
        se = rates.std(ddof=1) / math.sqrt(len(rates))
        assert abs(rates.mean() - truth) <= 4 * se + 0.25 * truth, (prompt.id, rates.mean(), truth, se)
        covers += [e.covers(truth) for e in ests]
    assert np.mean(covers) >= 0.6


@needs_refusal
def test_lpe_and_mis_on_rare_prompts(refusal):
    """At 1,000 rollouts, where naive sampling expects to see nothing, the path methods recover
    rates between 1e-6 and 1e-4 to within a factor of 10 for the median prompt (the evaluation
    harness reports the full distribution of errors)."""
    cases = _prompts_between(refusal, 1e-6, 1e-4, 4)
    assert cases
    errs = {"lpe": [], "mis": []}
    for prompt, truth in cases:
        for name, fn in (("lpe", lpe), ("mis", mis)):
            e = fn(_source(refusal, 0), prompt, 1000)
            assert e.total_rollouts <= 1000
            errs[name].append(math.inf if e.upper_bound_only else abs(math.log10(e.rate / truth)))
    for name, values in errs.items():
        assert np.median(values) < 1.0, (name, values)


@needs_refusal
def test_switching_mis_on_rare_prompts(refusal):
    """Switching proposals reweight only the reply's opening, where this organism's behaviour is
    decided: at 1,000 rollouts most rates between 1e-6 and 1e-4 come back within a factor of 3,
    inside their intervals."""
    cases = _prompts_between(refusal, 1e-6, 1e-4, 4)
    errs, covers = [], []
    for prompt, truth in cases:
        e = mis(_source(refusal, 1), prompt, 1000, switch_after=8)
        assert e.total_rollouts <= 1000 and all(k.endswith(";switch=8") for k in e.rollouts)
        errs.append(math.inf if e.upper_bound_only else abs(math.log10(e.rate / truth)))
        covers.append(e.covers(truth))
    assert np.mean(np.array(errs) < math.log10(3)) >= 0.75, errs
    assert np.mean(covers) >= 0.75, covers
