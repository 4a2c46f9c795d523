"""Harnesses that score estimators and detectors against ground truth (see ``suites``)."""

from .metrics import auroc, bootstrap_band, error_and_coverage, label_probability, matching_budget, naive_auroc_curve

__all__ = ["auroc", "bootstrap_band", "error_and_coverage", "label_probability", "matching_budget",
           "naive_auroc_curve"]
