"""PathSampler on small real checkpoints: endpoints, exact log-probs, padding, seeds, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tailscope.models import ModelPair
from tailscope.path import NonFiniteLogitsError, Proposal, path_logprobs
from tailscope.sampling import PathSampler, SampleRequest, encode_prompt, rollout_key, uniforms
from tailscope.scoring import Scorer


def _sampler(pair, **kw):
    kw.setdefault("max_new_tokens", 12)
    return PathSampler(pair, **kw)


def _reference_loop(lm, prompt_ids, key, steps, vocab):
    """Single-model sampling with full recomputation each step and the same uniforms."""
    ids = list(prompt_ids)
    out = []
    with torch.no_grad():
        for step in range(steps):
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1, :vocab].float()
            q = torch.log_softmax(torch.log_softmax(logits, -1), -1)
            cdf = q.double().exp().cumsum(-1)
            u = uniforms(np.array([key], dtype=np.uint64), step)[0]
            tok = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64), right=True))
            out.append(tok)
            ids.append(tok)
    return out


@pytest.mark.parametrize("alpha,which", [(0.0, "reference"), (1.0, "target")])
def test_endpoints_equal_single_model_sampling(tiny_pair, prompts, alpha, which):
    sampler = _sampler(tiny_pair, max_new_tokens=10, stop=())
    rollouts = sampler.sample(prompts, 3, alpha)
    lm = getattr(tiny_pair, which)
    for r in rollouts:
        prompt = next(p for p in prompts if p.id == r.prompt_id)
        key = rollout_key(0, Proposal(alpha), prompt.id, r.seed_index)
        expected = _reference_loop(lm, encode_prompt(lm.tokenizer, prompt), key, len(r.token_ids), tiny_pair.vocab_size)
        assert list(r.token_ids) == expected
        assert r.logprob == pytest.approx(r.logprob_reference if alpha == 0 else r.logprob_target, abs=1e-9)


def test_alpha_zero_ignores_the_target(tiny_dirs, prompts):
    a = ModelPair.load(str(tiny_dirs["ref"]), str(tiny_dirs["tgt"]))
    b = ModelPair.load(str(tiny_dirs["ref"]), str(tiny_dirs["third"]))
    ra = _sampler(a).sample(prompts, 4, 0.0)
    rb = _sampler(b).sample(prompts, 4, 0.0)
    assert [r.token_ids for r in ra] == [r.token_ids for r in rb]


@pytest.mark.parametrize("proposal", ["a=0.5", "a=-1", "a=3", "a=0;switch=4", "a=0.2;mix=0.5", "a=-0.5;switch=3;mix=0.3"])
def test_recorded_logprobs_equal_teacher_forced_scoring(tiny_pair, prompts, proposal):
    sampler = _sampler(tiny_pair, max_new_tokens=16)
    grid = (0.0, 0.25, 0.5, 1.0, 2.0)
    rollouts = sampler.sample(prompts, 4, proposal, logprob_grid=grid)
    by_id = {p.id: p for p in prompts}
    prop = Proposal.parse(proposal)
    moved = [prop.moved(beta) for beta in grid]  # the grid records the proposal's shape at each α
    scores = sampler.scorer().score_rollouts(by_id, rollouts, alphas=(0.0, 1.0), proposals=[proposal, *moved])
    for r, row in zip(rollouts, scores):
        if prop.switch_after is not None and len(r.token_ids) > prop.switch_after:
            assert math.isnan(r.logprob_reference)  # the reference is not run past the switch
        else:
            assert row[0] == pytest.approx(r.logprob_reference, abs=1e-4)
        assert row[1] == pytest.approx(r.logprob_target, abs=1e-4)
        assert row[2] == pytest.approx(r.logprob, abs=1e-4)
        for j, beta in enumerate(grid):
            assert row[3 + j] == pytest.approx(r.logprob_grid[beta], abs=1e-4)
        assert r.logprob_grid[prop.alpha if prop.alpha in grid else 1.0] == pytest.approx(
            r.logprob if prop.alpha in grid else r.logprob_target, abs=1e-4)


def test_padding_and_batching_do_not_change_rollouts(tiny_pair, prompts):
    together = _sampler(tiny_pair, batch_size=64).sample(prompts, 5, 0.4)
    alone = _sampler(tiny_pair, batch_size=1).sample(prompts, 5, 0.4)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    for x, y in zip(together, alone):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_same_seed_same_rollouts_and_new_seed_new_rollouts(tiny_pair, prompts):
    a = _sampler(tiny_pair, seed=7).sample(prompts, 4, 1.5)
    b = _sampler(tiny_pair, seed=7).sample(prompts, 4, 1.5)
    c = _sampler(tiny_pair, seed=8).sample(prompts, 4, 1.5)
    assert a == b
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_seed_offsets_continue_the_same_stream(tiny_pair, prompts):
    whole = _sampler(tiny_pair).sample(prompts[:1], 6, 0.5)
    tail = _sampler(tiny_pair).sample(prompts[:1], 3, 0.5, seed_offset=3)
    assert whole[3:] == tail


def test_inverse_cdf_draws_follow_the_distribution(tiny_pair, prompts):
    """First-token frequencies over many rollouts match q_α's first-token probabilities."""
    sampler = _sampler(tiny_pair, max_new_tokens=1, batch_size=512)
    n = 4000
    rollouts = sampler.sample(prompts[:1], n, 0.5)
    counts = np.bincount([r.token_ids[0] for r in rollouts], minlength=tiny_pair.vocab_size)
    p = prompts[0]
    with torch.no_grad():
        la = torch.log_softmax(tiny_pair.reference.model(input_ids=torch.tensor([sampler.encode_prompt(p, "reference")])).logits[0, -1, : tiny_pair.vocab_size], -1)
        lb = torch.log_softmax(tiny_pair.target.model(input_ids=torch.tensor([sampler.encode_prompt(p, "target")])).logits[0, -1, : tiny_pair.vocab_size], -1)
    q = path_logprobs(la, lb, 0.5).exp().double().numpy()
    top = np.argsort(-q)[:10]
    z = (counts[top] - n * q[top]) / np.sqrt(n * q[top] * (1 - q[top]))
    assert np.abs(z).max() < 4.5


def test_top_k_restricts_support_and_records_truncated_logprob(tiny_pair, prompts):
    sampler = _sampler(tiny_pair, top_k=3, max_new_tokens=6)
    lm = tiny_pair.target
    for r in sampler.sample(prompts, 3, 1.0, logprob_grid=(1.0,)):
        prompt = next(p for p in prompts if p.id == r.prompt_id)
        ids = encode_prompt(lm.tokenizer, prompt)
        truncated = 0.0
        with torch.no_grad():
            for tok in r.token_ids:
                logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1, : tiny_pair.vocab_size]
                top = torch.topk(logits, 3)
                assert tok in top.indices.tolist()
                truncated += float(torch.log_softmax(top.values, -1)[top.indices.tolist().index(tok)])
                ids.append(tok)
        assert r.logprob == pytest.approx(truncated, abs=1e-4)
        assert r.logprob_grid[1.0] == pytest.approx(r.logprob_target) and r.logprob > r.logprob_target


def test_stop_strings_and_finish_reasons(tiny_pair, prompts):
    tok = tiny_pair.tokenizer
    rollouts = _sampler(tiny_pair, max_new_tokens=20).sample(prompts, 6, 1.0)
    for r in rollouts:
        assert r.finish_reason in {"eos", "length"}
        if r.finish_reason == "length":
            assert len(r.token_ids) == 20
        else:
            assert r.token_ids[-1] in tiny_pair.eos_token_ids
    text = tok.decode(rollouts[0].token_ids[:6], skip_special_tokens=True)
    stop = text[-2:] if len(text.strip()) >= 2 else None
    if stop:
        again = _sampler(tiny_pair, max_new_tokens=20, stop=[stop]).sample(prompts, 6, 1.0)[0]
        assert again.finish_reason == "stop" and stop not in again.text
        assert len(again.token_ids) <= 6


def test_extreme_alpha_reports_non_finite_logits(tiny_pair, prompts):
    with pytest.raises(NonFiniteLogitsError, match=r"α=1e\+39.*step 0"):
        _sampler(tiny_pair).sample(prompts[:1], 2, 1e39)


def test_argument_validation_names_the_value(tiny_pair):
    with pytest.raises(ValueError, match=r"`temperature` \(=0\)"):
        PathSampler(tiny_pair, temperature=0)
    with pytest.raises(ValueError, match=r"`top_p` \(=1.5\)"):
        PathSampler(tiny_pair, top_p=1.5)
    with pytest.raises(ValueError, match=r"`mixture` \(=1.0\)"):
        Proposal(alpha=0, mixture=1.0)
    with pytest.raises(ValueError, match="unknown proposal field"):
        Proposal.parse("a=0;bogus=3")


def test_proposal_keys_round_trip():
    for text in ["a=0.3", "a=0;switch=8", "a=-1;mix=0.25", "a=0.5;switch=2;mix=0.1"]:
        assert Proposal.parse(text).key == text
    assert Proposal.parse(0.5) == Proposal(alpha=0.5)


def test_gpt2_architecture_pair(tiny_dirs, prompts):
    pair = ModelPair.load(str(tiny_dirs["gpt2_a"]), str(tiny_dirs["gpt2_b"]))
    sampler = _sampler(pair)
    rollouts = sampler.sample(prompts, 3, 0.5, logprob_grid=(0.5,))
    together = _sampler(pair, batch_size=1).sample(prompts, 3, 0.5)
    assert [r.token_ids for r in rollouts] == [r.token_ids for r in together]
    scores = sampler.scorer().score_rollouts({p.id: p for p in prompts}, rollouts, alphas=(0.5,))
    np.testing.assert_allclose(scores[:, 0], [r.logprob for r in rollouts], atol=1e-4)


def test_in_place_cache_and_row_pruning_match_plain_caches(tiny_pair, prompts, monkeypatch):
    """Rows stop at different steps (a common stop string), so finished rows are pruned from the
    preallocated caches; the rollouts equal those of transformers' own dynamic caches."""
    import tailscope.sampling as sampling

    kw = dict(max_new_tokens=24, stop=["e"], batch_size=32)
    fast = PathSampler(tiny_pair, **kw).sample(prompts, 8, 0.7, logprob_grid=(0.3,))
    assert len({len(r.token_ids) for r in fast}) > 3 and {r.finish_reason for r in fast} >= {"stop"}
    monkeypatch.setattr(sampling, "preallocate", lambda cache, room: False)
    plain = PathSampler(tiny_pair, **kw).sample(prompts, 8, 0.7, logprob_grid=(0.3,))
    assert [r.token_ids for r in fast] == [r.token_ids for r in plain]
    for a, b in zip(fast, plain):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_switching_skips_the_reference_without_changing_rollouts(tiny_pair, prompts):
    """Past the switch only the target is run; the tokens and every recorded density are those of a
    loop that keeps both models (checked against a pair whose reference differs only past the switch
    would be impossible to build, so against teacher forcing of the full sequences instead)."""
    sampler = _sampler(tiny_pair, max_new_tokens=16)
    switched = sampler.sample(prompts, 6, "a=0.3;switch=2", logprob_grid=(0.0, 0.5))
    assert any(len(r.token_ids) > 2 for r in switched)
    scores = sampler.scorer().score_rollouts({p.id: p for p in prompts}, switched, alphas=(1.0,),
                                             proposals=["a=0.3;switch=2", "a=0;switch=2", "a=0.5;switch=2"])
    for r, row in zip(switched, scores):
        assert [r.logprob_target, r.logprob, r.logprob_grid[0.0], r.logprob_grid[0.5]] == pytest.approx(row, abs=1e-4)


def test_store_keeps_an_unknown_reference_logprob(tiny_pair, prompts, tmp_path):
    from tailscope.store import RunStore, run_config

    sampler = _sampler(tiny_pair, max_new_tokens=12)
    with RunStore.open(tmp_path / "r.sqlite", run_config(sampler)) as store:
        got = store.get_or_sample(sampler, prompts[0], "a=0;switch=1", 4)
    with RunStore.open(tmp_path / "r.sqlite") as store:
        again = store.rollouts(prompts[0].id, "a=0;switch=1")
    long = [r for r in got if len(r.token_ids) > 1]
    assert long and all(math.isnan(r.logprob_reference) for r in long)
    assert [r.token_ids for r in again] == [r.token_ids for r in got]
    assert all(math.isnan(a.logprob_reference) == math.isnan(b.logprob_reference) for a, b in zip(again, got))


def test_on_step_hook_can_end_rows_without_changing_the_others(tiny_pair, prompts):
    sampler = _sampler(tiny_pair, max_new_tokens=10)
    plain = sampler.sample(prompts, 2, 1.5)
    seen: list[tuple[int, list[int]]] = []

    def hook(view):
        seen.append((view.step, list(view.rows)))
        return [1] if view.step == 2 else None

    hooked = [r for b in sampler.iter_batches([SampleRequest(p, i) for p in prompts for i in range(2)], 1.5,
                                              on_step=hook) for r in b]
    cut = hooked[1]
    assert cut.finish_reason == "stop" and cut.token_ids == plain[1].token_ids[:3]
    assert all(1 not in rows for step, rows in seen if step > 2)
    assert [r.token_ids for k, r in enumerate(hooked) if k != 1] == [r.token_ids for k, r in enumerate(plain) if k != 1]
    full = Scorer(tiny_pair).score([prompts[0]], [cut.token_ids], alphas=[1.5])[0, 0]
    assert cut.logprob == pytest.approx(float(full), abs=1e-4)
