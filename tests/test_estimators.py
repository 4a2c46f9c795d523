"""Estimators against exact ground truth on a solvable logit path (fixed seeds)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.special import expit

from tabular import TabularPath, TabularSource
from tailscope.estimators import (
    DEFAULT_GRID, FLAGS, Estimate, clopper_pearson, fit_path, forecast, importance, learn_shape, lpe, mis, naive,
    zero_hit_upper_bound,
)
from tailscope.prompts import Prompt

PROMPT = Prompt("x", text="tabular")


@pytest.fixture(scope="module")
def path():
    return TabularPath(vocab=5, length=4, shift=1.5, bad=2, seed=3)


def _repeat(method, path, reps, budget, **kw):
    return [method(TabularSource(path, seed=s), PROMPT, budget, **kw) for s in range(reps)]


def _check_unbiased_and_covering(estimates, truth, coverage=(0.88, 0.995)):
    rates = np.array([e.rate for e in estimates])
    se = rates.std(ddof=1) / math.sqrt(len(rates))
    assert abs(rates.mean() - truth) < 3.5 * se, (rates.mean(), truth, se)
    cov = np.mean([e.covers(truth) for e in estimates])
    assert coverage[0] <= cov <= coverage[1], cov
    return cov


def test_truth_is_in_the_rare_regime(path):
    assert 1e-3 < path.exact_rate(1.0) < 2e-2 < path.exact_rate(0.0)


def test_clopper_pearson_matches_reference_values():
    # R: binom.test(3, 100)$conf.int -> 0.006229972 0.085176053
    lo, hi = clopper_pearson(3, 100)
    assert lo == pytest.approx(0.006229972, rel=1e-6) and hi == pytest.approx(0.085176053, rel=1e-6)
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    assert zero_hit_upper_bound(1000) == pytest.approx(2.99125e-3, rel=1e-4)


def test_naive_is_unbiased_and_its_interval_covers(path):
    ests = _repeat(naive, path, 300, 400)
    _check_unbiased_and_covering(ests, path.exact_rate(1.0), coverage=(0.93, 1.0))
    assert all(e.total_rollouts == 400 for e in ests)


def test_naive_zero_hits_is_an_upper_bound():
    quiet = TabularPath(vocab=5, length=4, shift=9.0, bad=3, seed=3)
    e = naive(TabularSource(quiet), PROMPT, 200)
    assert e.upper_bound_only and e.hits == 0 and e.rate == 0.0
    assert e.interval[1] == pytest.approx(zero_hit_upper_bound(200)) and "0 hits" in e.describe()


@pytest.mark.parametrize("proposal", ["a=0", "a=0.3", "a=0;mix=0.5", "a=0;switch=2"])
def test_importance_sampling_is_unbiased_and_covers(path, proposal):
    ests = _repeat(importance, path, 300, 300, proposal=proposal)
    _check_unbiased_and_covering(ests, path.exact_rate(1.0))
    assert all(e.rollouts == {proposal: 300} for e in ests)
    assert 0 < ests[0].diagnostics["ess"] <= 300


def test_mis_fixed_allocation_is_unbiased_and_covers(path):
    ests = _repeat(mis, path, 200, 400, schedule="fixed", grid=(0.0, 0.25, 0.5, 0.75))
    _check_unbiased_and_covering(ests, path.exact_rate(1.0))
    assert all(e.total_rollouts == 400 for e in ests)


def test_mis_with_switching_points_is_unbiased_covers_and_cuts_the_variance(path):
    grid = (0.0, 0.25, 0.5, 0.75)
    switched = _repeat(mis, path, 200, 400, schedule="fixed", grid=grid, switch_after=2)
    _check_unbiased_and_covering(switched, path.exact_rate(1.0))
    assert set(switched[0].rollouts) == {f"a={a:g};switch=2" for a in grid}
    # longer replies that drift more: the behaviour is decided by the first 2 tokens, and with
    # switching the tokens after them no longer add weight noise
    long = TabularPath(vocab=5, length=8, shift=1.5, bad=2, seed=3, drift=1.0)
    switched = _repeat(mis, long, 100, 400, schedule="fixed", grid=grid, switch_after=2)
    plain = _repeat(mis, long, 100, 400, schedule="fixed", grid=grid)
    assert np.std([e.rate for e in switched]) < 0.6 * np.std([e.rate for e in plain])


def test_mis_adaptive_stays_within_budget_and_near_truth(path):
    ests = _repeat(mis, path, 100, 500)
    truth = path.exact_rate(1.0)
    assert all(e.total_rollouts <= 500 for e in ests)
    assert abs(np.median([math.log10(e.rate / truth) for e in ests if e.rate > 0])) < 0.15


def test_fit_path_recovers_a_logistic_path_exactly():
    alphas = np.linspace(0, 0.8, 9)
    r = expit(-1.0 - 9.0 * alphas)
    n = np.full(9, 1e6)
    fit = fit_path(alphas, n * r, n, "logit-linear")
    assert fit.coef == pytest.approx((-1.0, -9.0), abs=1e-5)
    assert float(fit.rate(1.0)) == pytest.approx(expit(-10.0), rel=1e-4)
    quad = fit_path(alphas, n * np.exp(-0.5 - 3 * alphas - 4 * alphas**2), n, "log-quadratic")
    assert quad.coef == pytest.approx((-0.5, -3.0, -4.0), abs=1e-4)


def test_lpe_recovers_the_rate_on_a_log_linear_path():
    """A path whose log-rate is linear in α (one deciding token, target logit lowered uniformly)."""
    p = TabularPath(vocab=4, length=2, shift=5.0, bad=1, seed=1, drift=0.0)
    truth = p.exact_rate(1.0)
    ests = _repeat(lpe, p, 20, 2000, bootstrap=100)
    errors = [abs(math.log10(e.rate / truth)) for e in ests]
    assert np.median(errors) < 0.3
    assert np.mean([e.covers(truth) for e in ests]) >= 0.5
    e = ests[0]
    assert e.total_rollouts <= 2000 and len(e.diagnostics["curve"]["rate"]) == 21
    assert e.interval[0] < e.rate < e.interval[1]


def _shaped_curves(c0, c1, alphas):
    """log r(α) = c0 + c1 φ(α) + m(α) for a bending path (flat near 0, steep toward 1)."""
    a = np.asarray(alphas)
    m, phi = -12.0 * a**2, -3.0 * a
    return np.array([x0 + x1 * phi + m for x0, x1 in zip(c0, c1)])


def test_learn_shape_and_a_log_shape_fit_recover_a_shared_path():
    grid = np.array(DEFAULT_GRID)
    rng = np.random.default_rng(0)
    calib = _shaped_curves(rng.uniform(-2, -0.5, 12), rng.uniform(0.5, 1.5, 12), grid)
    shape = learn_shape(grid, calib)
    assert shape.alphas[-1] == 1.0 and len(shape.mean) == len(grid) + 1
    # a new prompt on the same family: expected counts at the path points give back its curve
    truth = _shaped_curves([-1.0], [1.2], grid)[0]
    n = np.full(len(grid), 1e7)
    fit = fit_path(grid, n * np.exp(truth), n, "log-shape", shape=shape)
    assert fit.log_rate(grid) == pytest.approx(truth, abs=1e-3)
    with pytest.raises(ValueError, match="shape"):
        fit_path(grid, n * np.exp(truth), n, "log-shape")


def test_lpe_log_shape_needs_a_shape_and_falls_back_where_the_shape_fails():
    p = TabularPath(vocab=4, length=2, shift=5.0, bad=1, seed=1, drift=0.0)
    with pytest.raises(ValueError, match="learn_shape"):
        lpe(TabularSource(p), PROMPT, 500, family="log-shape")
    grid = np.array(DEFAULT_GRID)
    wrong = learn_shape(grid, _shaped_curves([-1, -2, -1.5, -0.5], [0.5, 1.0, 1.5, 0.8], grid) * 3)
    e = lpe(TabularSource(p), PROMPT, 4000, family="log-shape", shape=wrong, fit_points=6, bootstrap=50)
    assert e.diagnostics["shape_test"]["rejected"] and e.diagnostics["fit"]["family"] == "log-quadratic"


def test_lpe_without_enough_points_gives_the_monotone_bound():
    quiet = TabularPath(vocab=5, length=4, shift=9.0, bad=4, seed=3)
    e = lpe(TabularSource(quiet), PROMPT, 100)
    assert e.upper_bound_only and 0 < e.interval[1] <= 1 and "reason" in e.diagnostics


def test_estimate_rejects_bad_intervals_and_round_trips():
    with pytest.raises(ValueError):
        Estimate(method="naive", prompt_id="x", rate=0.1, interval=(0.2, 0.1))
    with pytest.raises(TypeError):
        Estimate("naive", "x", 0.1, (0.1, 0.2))  # keyword-only
    e = naive(TabularSource(TabularPath()), PROMPT, 50)
    assert Estimate.from_dict(e.to_dict()) == e
    assert Estimate.from_dict(dataclasses.asdict(e)) == e  # the run store's dump of the dataclass
    old = {k: v for k, v in e.to_dict().items() if k not in {"interval_method", "interval_basis", "flags"}}
    assert tuple(Estimate.from_dict(old).interval) == tuple(e.interval)  # records written before the interval object


def test_intervals_unpack_and_rebuild_at_another_level(path):
    e = naive(TabularSource(path), PROMPT, 2000)
    assert e.hits > 0
    low, high = e.interval
    assert (low, high) == (e.interval.low, e.interval.high) == (e.interval[0], e.interval[1])
    assert e.interval.confidence == e.confidence == 0.95
    at90 = e.interval_at(0.90)
    assert at90.confidence == 0.9 and e.interval.low < at90.low <= at90.high < e.interval.high
    assert tuple(at90) == clopper_pearson(e.hits, 2000, 0.9)
    assert tuple(naive(TabularSource(path), PROMPT, 2000, confidence=0.9).interval) == tuple(at90)
    w = importance(TabularSource(path), PROMPT, 300, proposal="a=0.3")
    assert tuple(w.interval_at(0.95)) == pytest.approx(tuple(w.interval))
    assert w.interval_at(0.8).high < w.interval.high
    l = lpe(TabularSource(TabularPath(vocab=4, length=2, shift=5.0, bad=1, seed=1, drift=0.0)), PROMPT, 2000,
            bootstrap=100)
    assert l.interval.method == "parametric bootstrap"
    with pytest.raises(ValueError, match="rerun the estimator"):
        l.interval_at(0.9)


def test_estimators_are_registered_and_plugins_load_by_name(path):
    from tailscope.estimators import estimate, estimator_names, get_estimator

    assert {"naive", "is", "mis", "lpe"} <= set(estimator_names())
    assert get_estimator("naive") is naive
    plugged = estimate("tailscope.estimators.naive:naive", TabularSource(path), PROMPT, 50)
    assert plugged == naive(TabularSource(path), PROMPT, 50)
    with pytest.raises(ValueError, match="must be one of"):
        get_estimator("magic")
    with pytest.raises(ValueError, match="cannot be loaded"):
        get_estimator("no.such.module:fn")


def test_forecast_recovers_a_known_gumbel_tail():
    """Scores ψ with an exponential upper tail S(ψ) = exp(−ψ) have worst-of-n quantile Q(n) = log n."""
    g = np.random.default_rng(0)
    psi = g.exponential(1.0, 4000)
    probs = np.exp(-np.exp(-psi))
    fc = forecast(probs, queries=(10**4,), tail_fraction=0.05)
    assert fc.slope == pytest.approx(-1.0, abs=0.15)
    expected = math.exp(-math.exp(-math.log(10**4)))
    assert fc.worst_query[10**4] == pytest.approx(expected, abs=2e-4)
    lo, hi = fc.interval[10**4]
    assert lo <= fc.worst_query[10**4] <= hi


def test_frontier_schedule_walks_further_toward_the_target(path):
    from tailscope.estimators import walk_path

    quiet = TabularPath(vocab=5, length=4, shift=4.0, bad=2, seed=3)
    walk = walk_path(TabularSource(quiet), PROMPT, 1000, schedule="adaptive")
    front = walk_path(TabularSource(quiet), PROMPT, 1000, schedule="frontier")
    assert sum(p.spent for p in front) == 1000 and sum(p.spent for p in walk) <= 1000
    last_hit = lambda pts: max(p.alpha for p in pts if p.hits)  # noqa: E731
    assert last_hit(front) >= last_hit(walk)


def test_flags_mark_the_intervals_that_miss_when_the_weights_are_heavy_tailed():
    """Rate 9e-7 at the target, 3.5e-3 at the reference, replies of 6 drifting tokens: IS from the
    reference misses the truth often (the weights that carry the mean are rarely drawn); every
    interval that misses is flagged, so no unflagged interval misses."""
    heavy = TabularPath(vocab=5, length=6, shift=3.0, bad=3, seed=3, drift=1.0)
    truth = heavy.exact_rate(1.0)
    ests = _repeat(importance, heavy, 60, 400, proposal="a=0")
    assert np.mean([e.covers(truth) for e in ests]) < 0.8
    assert all(e.flags for e in ests if not e.covers(truth))
    assert {f for e in ests for f in e.flags} <= set(FLAGS)


@pytest.mark.parametrize("method,settings", [(importance, {"proposal": "a=0.3"}), (mis, {})])
def test_unflagged_intervals_cover_at_the_nominal_rate(path, method, settings):
    ests = _repeat(method, path, 200, 300, **settings)
    truth = path.exact_rate(1.0)
    clean = [e.covers(truth) for e in ests if not e.flags]
    assert len(clean) >= 100 and 0.9 <= np.mean(clean) <= 0.995, (len(clean), np.mean(clean))
