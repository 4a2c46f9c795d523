"""The evaluation harnesses at toy budgets: they run end to end, resume from their store, and
their numbers are consistent with what they summarise."""

from __future__ import annotations

import numpy as np
import pytest

from tailscope.estimators import LiveSource
from tailscope.judges import make_judge
from tailscope.organisms import list_organisms, load
from tailscope.sampling import PathSampler
from tailscope.store import RunStore, run_config

needs = pytest.mark.skipif(not {"refusal", "backdoor"} <= set(list_organisms()), reason="organisms not built")


@needs
def test_amplification_curve_on_the_backdoor():
    from tailscope.evaluation.detection import amplification_curve

    org = load("backdoor")
    sampler = PathSampler(org.pair, max_new_tokens=8, seed=0, batch_size=64)
    curve = amplification_curve(org, [0.0, 3.0], 30, source=LiveSource(sampler, make_judge(org.judge_spec)),
                                prompt_limit=2)
    assert curve["prompts"] == 2 and curve["max_new_tokens"] == 8
    plain, amplified = curve["points"]
    assert plain["rollouts"] == amplified["rollouts"] == 60
    assert amplified["hits"] > plain["hits"] == 0
    assert amplified["gain_vs_exact"] == pytest.approx(amplified["rate"] / curve["exact_rate_after"])


@needs
def test_auroc_experiment_at_toy_budgets_resumes_from_its_store(tmp_path):
    from tailscope.evaluation.auroc import run_auroc_experiment

    org = load("refusal")
    judge = make_judge(org.judge_spec)
    sampler = PathSampler(org.pair, max_new_tokens=12, seed=0, batch_size=128)
    methods = {"mis": {"method": "mis"}, "is": {"method": "is", "proposal": "a=0"}}

    def run():
        with RunStore.open("auroc", run_config(sampler, judge=judge), root=tmp_path) as store:
            exp = run_auroc_experiment(org, store, sampler, judge, methods=methods, budgets=(20, 40), max_prompts=4,
                                       label_draws=20, naive_draws=20)
            return exp, store.count()

    exp, count = run()
    assert len(exp.prompts) == 4 and count > 0
    for name in methods:
        for budget in (20, 40):
            cell = exp.methods[name][budget]
            assert cell["rollouts_mean"] <= budget
            assert len(cell["estimates"]) == 4 and (0 <= cell["auroc"] <= 1 or np.isnan(cell["auroc"]))
    assert exp.naive and all(0 <= v["auroc"] <= 1 for v in exp.naive.values())
    again, count_again = run()
    assert count_again == count  # the rerun samples nothing new
    assert again.methods["mis"][40]["estimates"] == exp.methods["mis"][40]["estimates"]
