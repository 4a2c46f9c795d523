"""The benchmark harness: every method against brute-force ground truth at one budget of model
calls, scored by the Itakura–Saito loss raw and after a held-out affine fit (METHODS.md §3).

Estimates are cached per (model, distribution) in JSON and never recomputed, so the estimators can
run while the ground truth is still growing, and scoring always reads the latest counts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tailscope.lowprob.distributions import InputDistribution
from tailscope.lowprob.estimators import estimate
from tailscope.lowprob.extrapolation import gld_from_logits, qld_from_activations
from tailscope.lowprob.groundtruth import GroundTruth
from tailscope.lowprob.lm import LowProbModel
from tailscope.lowprob.loss import affine_fit_loss, floor_estimates, itakura_saito
from tailscope.lowprob.naive import naive_from_argmax
from tailscope.lowprob.result import LowProbEstimate

__all__ = ["METHODS", "run_pair", "score", "select_targets"]

METHODS = ("naive", "itgis", "mhis", "qld", "gld")
SHARED = ("naive", "qld", "gld")  # target-independent samples: one draw serves every target


def select_targets(truth: GroundTruth, *, count: int = 8, min_hits: int = 16, max_probability: float = 5e-4
                   ) -> list[int]:
    """Up to ``count`` tokens with ≥ ``min_hits`` hits and frequency ≤ ``max_probability``, evenly
    spread in log-probability from the rarest up."""
    candidates = sorted(truth.targets(min_hits=min_hits, max_probability=max_probability), key=truth.probability)
    if len(candidates) <= count:
        return candidates
    picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, count)).astype(int))
    return [candidates[i] for i in picks]


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else []


def _save(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, path)


def run_pair(lm: LowProbModel, dist: InputDistribution, targets: list[int], cache: str | Path, *, budget: int,
             seed: int = 0, methods: tuple[str, ...] = METHODS, options: dict[str, dict] | None = None,
             on_done: Callable[[str, int], None] | None = None) -> list[dict[str, Any]]:
    """Run every method on every target with ``budget`` calls each, skipping cached results.

    Naive sampling, QLD and GLD draw one sample of ``budget`` inputs and score every target on it
    (each estimate still uses exactly ``budget`` calls); ITGIS and MHIS run once per target.
    """
    cache = Path(cache)
    rows = _load(cache)
    done = {(r["method"], r["target"], r["budget"], r["seed"]) for r in rows}
    options = options or {}
    todo = [(m, t) for m in methods for t in targets if (m, t, budget, seed) not in done]
    shared = sorted({t for m, t in todo if m in SHARED})
    if shared:
        import torch

        lm.reset(budget)
        x = dist.sample(budget, torch.Generator().manual_seed(seed))
        acts, logits = lm.activations(x)
        lm.reset(None)
        weight, bias = lm.unembedding
        argmax = logits.argmax(1)
        for m, t in [(m, t) for m, t in todo if m in SHARED]:
            if m == "naive":
                result = naive_from_argmax(argmax, t, budget=budget, seed=seed)
            elif m == "qld":
                p, diag = qld_from_activations(acts, weight, bias, t, **options.get("qld", {}))
                result = LowProbEstimate.from_log("qld", t, math.log(p) if p > 0 else -math.inf, calls=budget,
                                                  budget=budget, seed=seed, diagnostics=diag)
            else:
                log_p, diag = gld_from_logits(logits, t)
                result = LowProbEstimate.from_log("gld", t, log_p, calls=budget, budget=budget, seed=seed,
                                                  diagnostics=diag)
            rows.append(result.to_dict())
            if on_done:
                on_done(m, t)
        _save(cache, rows)
    for m, t in [(m, t) for m, t in todo if m not in SHARED]:
        rows.append(estimate(m, lm, dist, t, budget, seed=seed, **options.get(m, {})).to_dict())
        _save(cache, rows)
        if on_done:
            on_done(m, t)
    return rows


def score(rows: list[dict[str, Any]], truth: GroundTruth, *, budget: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per method: mean Itakura–Saito loss raw and after a leave-one-out affine fit in log space,
    over the estimates made with ``budget`` calls and ``seed``.

    Estimates of zero (no hit seen, no pair found) are scored as 1/(2·budget), the same floor for
    every method, which is what a half-count continuity correction gives naive sampling.
    """
    floor = 1 / (2 * budget)
    rows = [r for r in rows if r["budget"] == budget and r["seed"] == seed]
    out: dict[str, dict[str, Any]] = {}
    for method in sorted({r["method"] for r in rows}):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["target"])
        p = np.array([truth.probability(r["target"]) for r in mine])
        p_hat = floor_estimates(np.array([math.exp(r["log_estimate"]) if r["log_estimate"] > -745 else 0.0
                                          for r in mine]), floor)
        raw = itakura_saito(p, p_hat)
        fitted = affine_fit_loss(p, p_hat) if len(p) >= 3 else np.full(len(p), np.nan)
        out[method] = {
            "targets": len(mine), "loss": float(np.mean(raw)), "loss_affine": float(np.mean(fitted)),
            "median_abs_log10_error": float(np.median(np.abs(np.log10(p_hat / p)))),
            "zero_estimates": int(sum(1 for r in mine if r["log_estimate"] == -math.inf)),
            "calls": max(r["calls"] for r in mine),
        }
    p_all = np.array([truth.probability(t) for t in sorted({r["target"] for r in rows})])
    if len(p_all) >= 2:
        # the best constant in hindsight, fitted on the other targets: a method with no signal at all
        held = [float(itakura_saito(p_all[j], np.mean(np.delete(p_all, j)))) for j in range(len(p_all))]
        out["constant"] = {"targets": len(p_all), "loss": float(np.mean(held)), "loss_affine": float(np.mean(held)),
                           "median_abs_log10_error": float("nan"), "zero_estimates": 0, "calls": 0}
    return out
