"""The Pareto-k̂ tail diagnostic against generalized Pareto samples of known shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tailscope.estimators._pareto import gpd_fit, pareto_khat, tail_length


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.8, 1.2])
def test_khat_recovers_the_shape_of_a_generalized_pareto_sample(shape):
    rng = np.random.default_rng(7)
    khats = [pareto_khat(stats.genpareto.rvs(shape, size=4000, random_state=rng)) for _ in range(20)]
    assert np.mean(khats) == pytest.approx(shape, abs=0.08)
    fits = [gpd_fit(stats.genpareto.rvs(shape, size=2000, random_state=rng))[0] for _ in range(10)]
    assert np.mean(fits) == pytest.approx(shape, abs=0.08)


def test_khat_matches_arviz_on_fixed_samples():
    # arviz-stats 0.8.0, array_stats.pareto_khat(x[None, :], tail="right", r_eff=1.0) on these
    # samples; it keeps floor(3√S) tail draws where PSIS keeps ⌈min(S/5, 3√S)⌉, hence the tolerance
    rng = np.random.default_rng(1)
    for shape, arviz in ((0.2, 0.26549), (0.5, 0.56411), (0.8, 0.79842)):
        x = stats.genpareto.rvs(shape, size=2000, random_state=rng)
        assert pareto_khat(x) == pytest.approx(arviz, abs=0.02)


def test_khat_edge_cases():
    assert tail_length(1000) == 95 and tail_length(100) == 20
    assert pareto_khat(np.ones(500)) == -math.inf  # a flat tail: all weights equal
    assert pareto_khat(np.ones(10)) == math.inf  # too few weights for a tail of 5
    rng = np.random.default_rng(0)
    light, heavy = rng.lognormal(0, 0.5, 1000), rng.lognormal(0, 3, 1000)
    assert pareto_khat(light) < 0.5 < 0.7 < pareto_khat(heavy)
    assert pareto_khat(np.log(heavy), log=True) == pytest.approx(pareto_khat(heavy))
