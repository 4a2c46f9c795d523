"""The estimators against exact answers by enumeration on a small real Llama (METHODS.md §3)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tailscope.lowprob import ESTIMATORS, BudgetExceededError, InputDistribution, LowProbModel, estimate
from tailscope.lowprob.exact import exact_argmax_probabilities, exact_tilted_distribution
from tailscope.lowprob.mhis import run_chains


def toy_llama(vocab: int, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8,
                         tie_word_embeddings=True, initializer_range=0.3)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def toy_distribution(vocab: int, length: int, seed: int) -> InputDistribution:
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(length, vocab, generator=gen, dtype=torch.float64) ** 3
    return InputDistribution("toy", probs / probs.sum(1, keepdim=True))


@pytest.fixture(scope="module")
def setup():
    lm = LowProbModel(toy_llama(12, seed=2))
    dist = toy_distribution(12, 4, seed=1)
    exact = exact_argmax_probabilities(lm, dist)
    rare = [t for t in exact.argsort().tolist() if 1e-3 < exact[t] < 1e-2]
    return lm, dist, exact, rare[0]


def test_one_hot_embeddings_give_the_same_logits_and_the_hooked_activation_is_unembedded():
    for model in [toy_llama(12), GPT2LMHeadModel(GPT2Config(vocab_size=12, n_embd=16, n_layer=1, n_head=2,
                                                            n_positions=8)).eval()]:
        lm = LowProbModel(model)
        x = torch.randint(0, 12, (5, 4), generator=torch.Generator().manual_seed(0))
        logits = lm.logits(x)
        onehot = torch.nn.functional.one_hot(x, 12).float()
        with torch.no_grad():
            via_embeds = model(inputs_embeds=onehot @ lm.embedding).logits[:, -1]
        torch.testing.assert_close(via_embeds, logits, atol=1e-5, rtol=1e-5)
        acts, logits64 = lm.activations(x)
        weight, bias = lm.unembedding
        torch.testing.assert_close(acts @ weight.T + bias, logits64, atol=1e-5, rtol=1e-5)


def test_gradient_matches_finite_differences_and_calls_are_counted():
    model = toy_llama(12).double()
    lm = LowProbModel(model)
    x = torch.tensor([[3, 1, 4, 1]])
    out = lm.target_grad(x, 5)
    assert lm.calls == 2
    onehot = torch.nn.functional.one_hot(x, 12).double()
    for pos, tok in [(0, 7), (2, 2), (3, 1)]:
        step = torch.zeros_like(onehot)
        step[0, pos, tok] = 1e-3
        with torch.no_grad():
            up, down = (model(inputs_embeds=(onehot + s) @ lm.embedding).logits[0, -1, 5] for s in (step, -step))
        assert float(out.grad[0, pos, tok]) == pytest.approx(float(up - down) / 2e-3, rel=1e-2, abs=1e-5)
    lm.reset(budget=3)
    with pytest.raises(BudgetExceededError, match="budget is 3"):
        lm.target_grad(torch.zeros(2, 4, dtype=torch.long), 0)


@pytest.mark.parametrize("method", sorted(ESTIMATORS))
def test_every_method_stays_within_the_same_budget(setup, method):
    lm, dist, exact, target = setup
    result = estimate(method, lm, dist, target, 2048, seed=0)
    assert result.calls <= 2048 and result.budget == 2048 and result.method == method
    assert result.estimate >= 0 and math.isfinite(result.log_estimate) or result.estimate == 0


def test_naive_interval_covers_the_truth(setup):
    lm, dist, exact, target = setup
    result = estimate("naive", lm, dist, target, 2**14, seed=3)
    low, high = result.diagnostics["interval"]
    assert low <= float(exact[target]) <= high
    assert result.estimate == result.diagnostics["hits"] / 2**14


def test_itgis_is_unbiased(setup):
    lm, dist, exact, target = setup
    values = torch.tensor([estimate("itgis", lm, dist, target, 1024, seed=s, temperature=0.5).estimate
                           for s in range(40)], dtype=torch.float64)
    truth = float(exact[target])
    std_error = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - truth) < 3 * std_error
    assert std_error < truth  # and it is informative


def test_mhis_chain_targets_the_tilted_distribution():
    lm = LowProbModel(toy_llama(6, seed=2))
    dist = toy_distribution(6, 3, seed=4)
    target, temperature = 2, 1.0
    support, q = exact_tilted_distribution(lm, dist, target, temperature)
    xs, _, _, acceptance = run_chains(lm, dist, target, chains=1024, steps=100, burn_in=40,
                                      temperature=temperature, seed=0)
    index = {tuple(row): i for i, row in enumerate(support.tolist())}
    empirical = torch.zeros(len(q), dtype=torch.float64)
    empirical.index_add_(0, torch.tensor([index[tuple(row)] for row in xs.tolist()]),
                         torch.ones(len(xs), dtype=torch.float64))
    empirical /= empirical.sum()
    p = dist.log_prob(support).exp()
    assert 0.5 * float((empirical - q).abs().sum()) < 0.05  # total variation to the target
    assert 0.5 * float((empirical - p).abs().sum()) > 0.2  # and not the untilted distribution
    assert 0.05 < acceptance < 1


def test_mhis_estimate_is_close_on_a_small_support(setup):
    lm, dist, exact, target = setup
    result = estimate("mhis", lm, dist, target, 2**14, seed=0, temperature=0.5, chains=128)
    assert result.estimate == pytest.approx(float(exact[target]), rel=0.5)


def test_bad_arguments_are_named(setup):
    lm, dist, _, target = setup
    with pytest.raises(KeyError, match="unknown estimator 'magic'"):
        estimate("magic", lm, dist, target, 100)
    with pytest.raises(ValueError, match="`temperature` \\(=0\\)"):
        estimate("itgis", lm, dist, target, 100, temperature=0)
    with pytest.raises(ValueError, match="too small for 8 chains"):
        estimate("mhis", lm, dist, target, 20)
