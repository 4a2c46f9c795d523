"""Brute-force ground truth (resumable), the loss, and the CLI on the shipped benchmark."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tailscope.lowprob import LowProbModel, affine_fit_loss, extend_ground_truth, itakura_saito, load_ground_truth
from tailscope.lowprob import zoo
from tailscope.lowprob.evaluation import run_pair, score, select_targets


@pytest.fixture(scope="module")
def benchmark():
    return LowProbModel(zoo.load_model("L1")), zoo.load_distribution("hex")


def test_stopping_and_continuing_gives_the_uninterrupted_counts(benchmark, tmp_path):
    lm, dist = benchmark
    whole = extend_ground_truth(lm, dist, tmp_path / "a.json", model="L1", inputs=3 * 512, chunk_size=512)
    extend_ground_truth(lm, dist, tmp_path / "b.json", model="L1", inputs=3 * 512, chunk_size=512, max_chunks=1)
    assert load_ground_truth(tmp_path / "b.json").inputs == 512
    resumed = extend_ground_truth(lm, dist, tmp_path / "b.json", model="L1", inputs=3 * 512, chunk_size=512)
    assert resumed.counts == whole.counts and resumed.inputs == whole.inputs == 1536 == sum(whole.counts)
    with pytest.raises(ValueError, match="holds \\(model, distribution, seed, chunk_size\\)"):
        extend_ground_truth(lm, dist, tmp_path / "b.json", model="L1", inputs=4096, chunk_size=1024)


def test_itakura_saito_values():
    assert itakura_saito(1e-6, 1e-6) == 0
    assert itakura_saito(2e-6, 1e-6) == pytest.approx(2 - math.log(2) - 1)
    assert itakura_saito(1e-6, 0.0) == math.inf
    p = np.array([1e-6, 3e-5, 2e-4, 5e-6])
    # an estimator off by a fixed power law is fixed by the affine fit in log space
    assert affine_fit_loss(p, 10 * p**0.5) == pytest.approx(np.zeros(4), abs=1e-9)
    with pytest.raises(ValueError, match="at least 3 targets"):
        affine_fit_loss(p[:2], p[:2])


def test_harness_scores_every_method_at_one_budget(benchmark, tmp_path):
    lm, dist = benchmark
    truth = extend_ground_truth(lm, dist, tmp_path / "t.json", model="L1", inputs=2**15, chunk_size=2**14)
    targets = select_targets(truth, count=3, min_hits=16, max_probability=0.05)
    assert len(targets) == 3
    rows = run_pair(lm, dist, targets, tmp_path / "cache.json", budget=512, options={"mhis": {"chains": 16}})
    assert len(rows) == 15 and all(r["calls"] <= 512 for r in rows)
    assert run_pair(lm, dist, targets, tmp_path / "cache.json", budget=512) == rows  # cached, nothing rerun
    scores = score(rows, truth, budget=512)
    assert set(scores) == {"naive", "itgis", "mhis", "qld", "gld", "constant"}
    assert all(s["loss"] >= 0 and s["loss_affine"] >= 0 for s in scores.values())


@pytest.mark.slow
def test_cli_ground_truth_and_score(tmp_path):
    from tailscope.cli import app

    runner = CliRunner()
    args = ["lowprob", "ground-truth", "--models", "L1", "--distributions", "colon", "--inputs", "2048",
            "--chunk-size", "1024", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "L1__colon.json").read_text())
    assert data["inputs"] == 2048 == sum(data["counts"])
    bad = runner.invoke(app, ["lowprob", "ground-truth", "--models", "L9", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "L9" in bad.output


def test_cli_estimate_prints_one_result():
    from tailscope.cli import app

    result = CliRunner().invoke(app, ["lowprob", "estimate", "#331", "--model", "L1", "--method", "gld",
                                      "--budget", "256"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["method"] == "gld" and data["calls"] == 256 and data["target"] == 331
    bad = CliRunner().invoke(app, ["lowprob", "estimate", "#1", "--method", "magic"])
    assert bad.exit_code != 0 and "magic" in bad.output
