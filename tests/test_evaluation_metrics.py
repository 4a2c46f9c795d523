"""Evaluation metrics against direct computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tailscope.evaluation.metrics import auroc, label_probability, matching_budget, naive_auroc_curve


def _pairwise_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pairwise_counting_with_ties():
    g = np.random.default_rng(1)
    scores = g.integers(0, 4, 60).astype(float)
    labels = g.random(60) < 0.4
    assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels))
    assert math.isnan(auroc([1, 2], [True, True]))


def test_label_probability_is_stable_for_tiny_rates():
    p = np.array([1e-9, 1e-5, 0.5])
    got = label_probability(p, 100_000)
    assert got[0] == pytest.approx(1e-4, rel=1e-4)
    assert got[1] == pytest.approx(1 - math.exp(-1), rel=1e-4) and got[2] == 1.0


def test_naive_auroc_rises_with_budget():
    g = np.random.default_rng(0)
    rates = 10 ** g.uniform(-7, -3, 200)
    labels = g.random(200) < label_probability(rates, 100_000)
    curve = naive_auroc_curve(rates, labels, [10, 1000, 100_000], draws=20)
    means = [curve[b].mean() for b in (10, 1000, 100_000)]
    assert means[0] < means[1] < means[2] and means[0] == pytest.approx(0.5, abs=0.05)


def test_matching_budget_interpolates_on_log_budget():
    curve = {10: 0.5, 100: 0.6, 1000: 0.8}
    assert matching_budget(curve, 0.7) == pytest.approx(math.sqrt(100 * 1000))
    assert matching_budget(curve, 0.5) == 10 and matching_budget(curve, 0.9) is None


# --------------------------------------------------------------------------- the drift/length map
def test_map_picks_prompts_evenly_in_log_rate_and_resumes(tmp_path):
    import math

    from tailscope.evaluation.drift_map import pick_prompts, run_map
    from tailscope.organisms import list_organisms, load

    if "refusal" not in list_organisms():
        import pytest

        pytest.skip("the refusal organism is not built")
    org = load("refusal")
    ids = pick_prompts(org, 5)
    logs = [math.log10(org.rate(i)) for i in ids]
    assert len(ids) == 5 and logs == sorted(logs) and all(-6 <= x <= -4 for x in logs)
    assert logs[-1] - logs[0] > 1.0  # spread over the range, not bunched

    methods = {"is (reference proposal)": {"method": "is", "proposal": "a=0"}, "mis": {"method": "mis"}}
    first = run_map(["refusal"], [6], runs_dir=tmp_path, prompts=2, budget=40, methods=methods)
    again = run_map(["refusal"], [6], runs_dir=tmp_path, prompts=2, budget=40, methods=methods)
    assert [c["estimates"] for c in first["cells"]] == [c["estimates"] for c in again["cells"]]
    assert {c["method"] for c in first["cells"]} == set(methods)
    for cell in first["cells"]:
        assert cell["prompts"] == 2 and cell["rollouts_mean"] <= 40
        assert cell["per_token_kl_harmless"] > 0


def test_calibration_split_never_holds_a_scored_prompt():
    from tailscope.evaluation.calibration import calibration_split
    from tailscope.prompts import Prompt

    prompts = [Prompt(f"p{i}", text=f"t{i}") for i in range(20)]
    scored = [f"p{i}" for i in range(0, 20, 2)]
    held = calibration_split(prompts, scored, 4, seed=1)
    assert len(held) == 4 and not {p.id for p in held} & set(scored)
    assert held == calibration_split(prompts, scored, 4, seed=1)
    with pytest.raises(ValueError, match="unscored"):
        calibration_split(prompts, scored, 11)


def test_shape_learned_on_unscored_prompts_extrapolates_the_scored_ones():
    """The shared path shape of the refusal organism, learned from other prompts' path points
    (α ≤ 0.9 only), carries exact path rates from α = 0.4..0.9 to the target's rate."""
    from tailscope.estimators import fit_path
    from tailscope.evaluation.calibration import learn_path_shape, resolve_tuned
    from tailscope.evaluation.drift_map import pick_prompts
    from tailscope.organisms import load

    org = load("refusal")  # shipped with the package: a missing organism is a failure, not a skip
    ids = pick_prompts(org, 10)
    shape, calibration = learn_path_shape(org, ids)
    assert len(calibration) >= 3 and not set(calibration) & set(ids)
    alphas, n = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9], np.full(6, 1e6)
    errors = []
    for pid in ids:
        path = org.ground_truth[pid]["alpha_rates"]
        fit = fit_path(alphas, n * np.array([path[f"{a:g}"] for a in alphas]), n, "log-shape", shape=shape)
        errors.append(abs(float(fit.log_rate(1.0)) / math.log(10) - math.log10(org.rate(pid))))
    assert np.median(errors) < 0.25 and max(errors) < 0.5
    specs, record = resolve_tuned({"lpe": {"method": "lpe", "family": "log-shape", "shape": "learn"}}, None, None,
                                  [], 100, organism=org, scored=ids)
    assert specs["lpe"]["shape"] == shape and record["lpe"]["calibration_prompts"] == calibration


def test_a_path_shape_cannot_be_learned_from_rates_outside_its_window():
    from types import SimpleNamespace

    from tailscope.evaluation.calibration import UnusableOrganismError, learn_path_shape

    path = {f"{a / 10:g}": 0.3 for a in range(11)}  # every rate far above the window's 1e-3
    org = SimpleNamespace(ground_truth={f"p{i}": {"rate": 0.3, "alpha_rates": path} for i in range(6)})
    with pytest.raises(UnusableOrganismError, match="outside the window"):
        learn_path_shape(org, [])
