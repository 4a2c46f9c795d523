"""Low-probability estimation over input distributions (Wu & Hilton, ARC 2024; METHODS.md §3).

Given a causal LM, a distribution over inputs with independent positions and a target token,
estimate how often the model's argmax is the target, with every method held to the same budget
of model calls.
"""

from __future__ import annotations

from tailscope.lowprob.distributions import (
    DISTRIBUTIONS,
    DistributionSpec,
    InputDistribution,
    build_distribution,
    count_tokens,
    from_counts,
    register_distribution,
)
from tailscope.lowprob.estimators import ESTIMATORS, estimate
from tailscope.lowprob.extrapolation import gld, gld_from_logits, qld, qld_from_activations
from tailscope.lowprob.groundtruth import GroundTruth, extend_ground_truth, load_ground_truth
from tailscope.lowprob.itgis import itgis
from tailscope.lowprob.lm import BudgetExceededError, LowProbModel
from tailscope.lowprob.loss import affine_fit_loss, itakura_saito
from tailscope.lowprob.mhis import mhis
from tailscope.lowprob.naive import naive
from tailscope.lowprob.result import LowProbEstimate

__all__ = [
    "DISTRIBUTIONS",
    "ESTIMATORS",
    "BudgetExceededError",
    "DistributionSpec",
    "GroundTruth",
    "InputDistribution",
    "LowProbEstimate",
    "LowProbModel",
    "affine_fit_loss",
    "build_distribution",
    "count_tokens",
    "estimate",
    "extend_ground_truth",
    "from_counts",
    "gld",
    "gld_from_logits",
    "itakura_saito",
    "itgis",
    "load_ground_truth",
    "mhis",
    "naive",
    "qld",
    "qld_from_activations",
    "register_distribution",
]
