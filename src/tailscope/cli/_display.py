"""How the CLI shows stored things to people.

A proposal is stored under its canonical key (``a=0;switch=8``), which also seeds its rollouts and
so never changes; people read ``alpha=0;switch=8``, which :meth:`Proposal.parse` accepts too.
"""

from __future__ import annotations

from collections.abc import Mapping


def proposal_label(key: str) -> str:
    """``a=0.3;switch=8`` -> ``alpha=0.3;switch=8`` (the stored key is left as it is)."""
    parts = key.split(";")
    return ";".join("alpha=" + p[2:] if p.startswith("a=") else p for p in parts)


def rollouts_label(rollouts: Mapping[str, int]) -> dict[str, int]:
    """An estimate's rollouts per proposal, keyed for people."""
    return {proposal_label(k): v for k, v in rollouts.items()}
