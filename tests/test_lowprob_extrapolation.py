"""QLD and GLD on Gaussian activations, where the answer is known (METHODS.md §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tailscope.lowprob.extrapolation import gld_from_logits, qld_from_activations, shortest_direction, whiten


def gaussian(n: int, mean, cov, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multivariate_normal(mean, cov, size=n))


def test_whitening_centres_in_activation_space():
    acts = gaussian(5000, [3.0, -2.0, 1.0], [[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], seed=0)
    z, mean, chol = whiten(acts, eps=0.0)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), torch.eye(3, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(z @ chol.T + mean, acts)


def test_shortest_direction_is_the_projection_onto_one_half_space():
    slopes = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    offsets = torch.tensor([-5.0, 0.0], dtype=torch.float64)
    z = shortest_direction(slopes, offsets, 0)
    torch.testing.assert_close(z, torch.tensor([1.0, 2.0], dtype=torch.float64), atol=1e-6, rtol=0)
    rng = torch.Generator().manual_seed(0)
    slopes = torch.randn(30, 5, generator=rng, dtype=torch.float64)
    offsets = torch.randn(30, generator=rng, dtype=torch.float64)
    target = int((slopes.norm(dim=1)).argmax())
    z = shortest_direction(slopes, offsets, target)
    assert int((slopes @ z + offsets).argmax()) == target


def test_gld_is_exact_when_the_logit_gap_is_gaussian():
    # two tokens: the gap is linear in a Gaussian activation, so it is Gaussian
    mean, cov = np.array([0.5, -1.0, 2.0]), np.diag([1.0, 0.5, 2.0])
    weight = torch.tensor([[1.0, 0.0, -0.5], [0.0, 1.0, 0.5]], dtype=torch.float64)
    bias = torch.tensor([-6.0, 3.0], dtype=torch.float64)
    acts = gaussian(2**16, mean, cov, seed=1)
    gap_w, gap_b = (weight[0] - weight[1]).numpy(), float(bias[0] - bias[1])
    mu, sigma = gap_w @ mean + gap_b, math.sqrt(gap_w @ cov @ gap_w)
    truth = stats.norm.sf(0, mu, sigma)
    assert 1e-7 < truth < 1e-5
    log_p, diag = gld_from_logits(acts @ weight.T + bias, 0)
    assert diag["samples"] == 2**16
    assert math.exp(log_p) == pytest.approx(truth, rel=0.25)


def test_qld_counts_pairs_exactly():
    # the sorted interval count equals the O(n²) count over all recombined pairs
    acts = gaussian(150, np.zeros(3), np.diag([1.0, 2.0, 0.5]), seed=2)
    rng = torch.Generator().manual_seed(3)
    weight = torch.randn(6, 3, generator=rng, dtype=torch.float64)
    bias = torch.randn(6, generator=rng, dtype=torch.float64)
    target = int((acts @ weight.T + bias).argmax(1).bincount(minlength=6).argmin())
    p, _ = qld_from_activations(acts, weight, bias, target, eps=0.0)
    z, mean, chol = whiten(acts, eps=0.0)
    d = shortest_direction(weight @ chol, weight @ mean + bias, target)
    d = d / d.norm()
    a = z @ d
    b = z - a[:, None] * d
    pairs = a[:, None, None] * d + b[None, :, :]  # (i, j, dim)
    logits = (pairs @ chol.T + mean) @ weight.T + bias
    assert p == pytest.approx(float((logits.argmax(-1) == target).double().mean()), abs=1e-12)


def test_qld_matches_gaussian_truth():
    mean, cov = np.array([0.0, 0.5, -0.5]), np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.0]])
    weight = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -1.0, -1.0]],
                          dtype=torch.float64)
    bias = torch.tensor([-4.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    big = gaussian(2**20, mean, cov, seed=4)
    truth = float(((big @ weight.T + bias).argmax(1) == 0).double().mean())
    assert 1e-3 < truth < 1e-2
    p, _ = qld_from_activations(gaussian(2**13, mean, cov, seed=5), weight, bias, 0)
    assert p == pytest.approx(truth, rel=0.2)
