"""Input distributions: construction from a frequency table, sampling, log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from tailscope.lowprob import DISTRIBUTIONS, DistributionSpec, InputDistribution, from_counts, register_distribution
from tailscope.lowprob.distributions import build_distribution, count_tokens
from tailscope.tiny import build_tokenizer


TEXTS = ["def alpha(beta):\n    if beta:\n        return Gamma(beta)\n"] * 20 + ["Delta epsilon zeta 0xff 0x1a\n"] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TEXTS, vocab_size=300)


def test_counts_and_weights_follow_the_corpus(tokenizer):
    counts = count_tokens(tokenizer, TEXTS)
    assert sum(counts) == sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    dist = from_counts("words", tokenizer, counts, [r" ?[a-z]+", "=:"])
    ids = dist.probs[0].nonzero().flatten()
    expected = torch.tensor([counts[i] for i in ids], dtype=torch.float64)
    torch.testing.assert_close(dist.probs[0, ids], expected / expected.sum())
    assert all(tokenizer.decode([int(i)]).strip().isalpha() for i in ids)
    colon = tokenizer(":", add_special_tokens=False)["input_ids"][0]
    assert dist.probs[1, colon] == 1.0 and dist.free_positions == [0]


def test_sampling_matches_probabilities_and_log_prob():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 1.0], [0.1, 0.1, 0.1, 0.7]], dtype=torch.float64)
    dist = InputDistribution("toy", probs)
    x = dist.sample(200_000, torch.Generator().manual_seed(0))
    for pos in range(3):
        freq = torch.bincount(x[:, pos], minlength=4).double() / len(x)
        torch.testing.assert_close(freq, probs[pos], atol=4e-3, rtol=0)
    lp = dist.log_prob(torch.tensor([[0, 3, 3], [2, 3, 1]]))
    torch.testing.assert_close(lp, torch.tensor([math.log(0.5 * 0.7), math.log(0.2 * 0.1)], dtype=torch.float64))


def test_bad_inputs_are_named(tokenizer):
    counts = count_tokens(tokenizer, TEXTS)
    with pytest.raises(ValueError, match="position 1 sums to"):
        InputDistribution("bad", torch.tensor([[0.5, 0.5], [0.5, 0.4]]))
    with pytest.raises(ValueError, match="not one"):
        from_counts("bad", tokenizer, counts, ["=def alpha(beta) and more"])
    with pytest.raises(ValueError, match="no token with a nonzero count matches"):
        from_counts("bad", tokenizer, counts, ["[Q]+"])
    with pytest.raises(KeyError, match="unknown distribution 'nope'"):
        build_distribution("nope", tokenizer, counts)
    with pytest.raises(ValueError, match="already registered"):
        register_distribution(DistributionSpec("hex", ("[0-9]",)))


def test_shipped_distributions():
    from tailscope.lowprob import zoo

    tokenizer = zoo.load_tokenizer()
    assert len(DISTRIBUTIONS) >= 6
    for name in DISTRIBUTIONS:
        dist = zoo.load_distribution(name, tokenizer=tokenizer)
        assert dist.length == 8
        assert min(s for s in dist.support_sizes() if s > 1) >= 10, name
        text = tokenizer.decode(dist.sample(1, torch.Generator().manual_seed(0))[0])
        if name == "colon":
            assert text.endswith(":")
        if name == "if":
            assert text.startswith(" if")
        if name == "hex":
            assert all(c in "0123456789abcdef" for c in text)
