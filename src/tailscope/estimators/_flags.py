"""Reasons not to trust an estimate's interval: short machine names, each with an explanation.

An estimate's ``flags`` lists the names whose rule fired (the rules live with the estimators that
compute the diagnostics). The names are stable: they appear in JSON, tables and reports.
"""

from __future__ import annotations

__all__ = ["FLAGS", "explain"]

FLAGS: dict[str, str] = {}


def _flag(name: str, text: str) -> str:
    FLAGS[name] = text
    return name


def explain(name: str) -> str:
    """The human explanation of a flag (the name itself for a flag this version does not know)."""
    return FLAGS.get(name, name)
