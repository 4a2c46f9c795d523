"""The cross-entropy proposal search on a small real pair."""

from __future__ import annotations

import pytest

from tailscope.estimators import LiveSource, importance, mis
from tailscope.estimators.tuning import candidate_log_q, tune_proposal, tune_switch
from tailscope.judges import make_judge
from tailscope.path import Proposal
from tailscope.sampling import PathSampler


@pytest.mark.parametrize("proposal", ["a=0;mix=0.5", "a=0.25;switch=3", "a=0.5;switch=2;mix=0.9", "a=0"])
def test_candidate_log_q_matches_teacher_forced_proposal_scores(tiny_pair, prompts, proposal):
    sampler = PathSampler(tiny_pair, max_new_tokens=8)
    rollouts = sampler.sample(prompts, 2, "a=0.5")
    scorer = sampler.scorer()
    by_id = {p.id: p for p in prompts}
    per_token = scorer.token_logprobs([by_id[r.prompt_id] for r in rollouts], [r.token_ids for r in rollouts],
                                      (0.0, 0.25, 0.5, 1.0))
    direct = scorer.score_rollouts(by_id, rollouts, (), [proposal])[:, 0]
    prop = Proposal.parse(proposal)
    col = [0.0, 0.25, 0.5, 1.0].index(prop.alpha)
    for table, want in zip(per_token, direct):
        assert candidate_log_q(table, prop, col, 3) == pytest.approx(want, abs=1e-4)


def test_tune_proposal_picks_a_candidate_on_calibration_prompts(tiny_pair, prompts):
    sampler = PathSampler(tiny_pair, max_new_tokens=6)
    source = LiveSource(sampler, make_judge("regex:^[a-m]"))
    search = tune_proposal(source, sampler.scorer(), prompts[:2], per_prompt=40, rounds=2,
                           switches=(None, 2), mixtures=(0.0, 0.5))
    drawn_from = {r["proposal"] for r in search.rounds}
    assert search.rollouts == 2 * 40 * len(drawn_from)
    assert isinstance(search.proposal, Proposal) and len(search.rounds) == 2
    est = importance(source, prompts[2], 50, proposal=search.proposal)
    assert est.rollouts == {search.proposal.key: 50}


def test_tune_switch_picks_a_switch_point_for_path_mis(tiny_pair, prompts):
    sampler = PathSampler(tiny_pair, max_new_tokens=10)
    source = LiveSource(sampler, make_judge("regex:^[a-m]"))
    search = tune_switch(source, sampler.scorer(), prompts[:2], 60, switches=(None, 1, 4), grid=(0.0, 0.5), rounds=2)
    assert search.switch_after in (None, 1, 4) and len(search.rounds) == 2
    assert search.rounds[0]["hits"] > 0 and search.rounds[1]["switch_after"] == search.rounds[0]["chosen"]
    assert search.rollouts >= 2 * 60
    est = mis(source, prompts[2], 60, grid=(0.0, 0.5), switch_after=search.switch_after)
    assert est.total_rollouts <= 60 and est.settings["switch_after"] == search.switch_after


def test_the_tuned_proposal_cuts_the_variance_on_an_exact_path():
    """On a path with long, drifting replies the reference proposal's weights degenerate; the proposal
    chosen on calibration prompts (never scored) must give a smaller spread of estimates around the
    exact rate over independent repetitions."""
    import numpy as np
    from tabular import TabularPath, TabularScorer, TabularSource

    from tailscope.prompts import Prompt

    path = TabularPath(vocab=5, length=8, shift=2.0, bad=2, seed=3, drift=1.0)
    truth = path.exact_rate(1.0)
    calibration = [Prompt(f"cal{i}", text="tabular") for i in range(3)]
    search = tune_proposal(TabularSource(path, seed=99), TabularScorer(path), calibration, per_prompt=300,
                           switches=(None, 2, 4), mixtures=(0.0, 0.5))
    assert search.proposal.key != "a=0"
    scored = Prompt("scored", text="tabular")

    def errors(proposal: str) -> np.ndarray:
        ests = [importance(TabularSource(path, seed=s), scored, 200, proposal=proposal).rate for s in range(40)]
        return np.log(np.maximum(ests, 1e-12) / truth)

    default, tuned = errors("a=0"), errors(search.proposal.key)
    assert np.mean(tuned**2) < 0.5 * np.mean(default**2)
