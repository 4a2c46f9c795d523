"""Where on the path to spend rollouts: the adaptive walk shared by LPE and path MIS (METHODS.md §2).

Start at α = 0 (the less-safe reference, where the behaviour is common) and walk a fixed grid
toward α = 1 in equal steps of rollouts while the behaviour is still seen; then spend what is left
of the budget on the last points of the walk, where the rate is smallest but still measurable —
the points that pin down the extrapolation and carry the balance heuristic's weight near α = 1.

With ``switch_after`` = s every point is a switching proposal (METHODS.md §2): its first s reply
tokens come from q_α, the rest from the target. The judged rate at a point is then the rate of a
reply whose opening comes from q_α; at α = 1 it is still the target's rate, and the importance
ratios between points depend only on the first s tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..rollout import Proposal
from ..prompts import Prompt
from ._source import Observation, RolloutSource

__all__ = ["DEFAULT_GRID", "PathPoint", "WalkSummary", "summarize", "walk_path"]

DEFAULT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class PathPoint:
    """Rollouts at one α of the path and how many the judge flagged."""

    alpha: float
    observations: list[Observation] = field(default_factory=list)
    switch_after: int | None = None

    @property
    def proposal(self) -> Proposal:
        return Proposal(self.alpha, switch_after=self.switch_after)

    @property
    def n(self) -> int:
        return sum(o.flagged is not None for o in self.observations)

    @property
    def hits(self) -> int:
        return sum(bool(o.flagged) for o in self.observations)

    @property
    def spent(self) -> int:
        return len(self.observations)


@dataclass(frozen=True)
class WalkSummary:
    """What a walk cost and saw: rollouts by proposal key, hits, judge failures, the points."""

    spent: dict[str, int]
    hits: int
    failed: int
    path: list[dict]


def summarize(points: Sequence[PathPoint]) -> WalkSummary:
    return WalkSummary(
        spent={p.proposal.key: p.spent for p in points},
        hits=sum(p.hits for p in points),
        failed=sum(p.spent - p.n for p in points),
        path=[{"alpha": p.alpha, "n": p.n, "hits": p.hits, "proposal": p.proposal.key} for p in points],
    )


def walk_path(
    source: RolloutSource,
    prompt: Prompt,
    budget: int,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    step_share: float = 0.05,
    min_hits: int = 1,
    refine_points: int = 3,
    schedule: str = "adaptive",
    target_hits: float = 4.0,
    switch_after: int | None = None,
) -> list[PathPoint]:
    """Spend exactly ``budget`` rollouts (or fewer when nothing is left to learn) along ``grid``.

    Args:
        grid: increasing α values in [0, 1) to walk.
        step_share: the share of the budget spent at each point of the walk (at least 1 rollout).
        min_hits: keep walking while a point sees at least this many hits.
        refine_points: how many of the walk's last points share the remaining budget.
        schedule: ``adaptive`` (the walk above), ``frontier`` (each step sized to expect
            ``target_hits`` hits at the next point, from a log-linear trend through the points so
            far, so the walk reaches as close to α = 1 as the budget allows) or ``fixed`` (the
            budget split evenly over the grid, independent of what is seen; unbiased for MIS).
        switch_after: draw only the first this many reply tokens at each point, the rest from the
            target (None: the whole reply at the point).

    Every rollout records log q_β for every β of the grid, so any subset of points can be pooled.
    """
    alphas = sorted(float(a) for a in grid)
    if not alphas or alphas[0] < 0 or alphas[-1] >= 1:
        raise ValueError(f"`grid` (={list(grid)}) must be non-empty values in [0, 1)")
    if budget < len(alphas) and schedule == "fixed":
        raise ValueError(f"`budget` (={budget}) is smaller than the grid ({len(alphas)} points)")
    if schedule not in {"adaptive", "frontier", "fixed"}:
        raise ValueError(f"`schedule` (={schedule!r}) must be 'adaptive', 'frontier' or 'fixed'")
    record = tuple(alphas)
    points: dict[float, PathPoint] = {}

    def spend(alpha: float, n: int) -> PathPoint:
        point = points.setdefault(alpha, PathPoint(alpha, switch_after=switch_after))
        point.observations = source.draw(prompt, point.proposal, n, record)
        return point

    if schedule == "fixed":
        share = budget // len(alphas)
        for i, a in enumerate(alphas):
            spend(a, share + (1 if i < budget - share * len(alphas) else 0))
        return [points[a] for a in alphas]

    step = max(1, int(budget * step_share))
    if schedule == "frontier":
        return _frontier(spend, points, alphas, budget, step, min_hits, target_hits)
    used = 0
    for a in alphas:
        if used + step > budget:
            break
        point = spend(a, step)
        used += step
        if point.hits < min_hits:
            break
    walked = sorted(points)
    tail = walked[-refine_points:]
    left = budget - used
    for i, a in enumerate(tail):
        extra = left // len(tail) + (1 if i < left % len(tail) else 0)
        if extra:
            spend(a, points[a].spent + extra)
    return [points[a] for a in walked]


def _predicted_rate(points: dict[float, PathPoint], alpha: float) -> float:
    """The rate expected at ``alpha`` from a log-linear trend through the points with hits."""
    seen = [(a, p.hits / p.n) for a, p in sorted(points.items()) if p.n and p.hits]
    if not seen:
        return 0.0
    if len(seen) == 1:
        return seen[0][1]
    (a0, r0), (a1, r1) = seen[-2], seen[-1]
    slope = min(0.0, (math.log(r1) - math.log(r0)) / (a1 - a0))
    return r1 * math.exp(slope * (alpha - a1))


def _frontier(spend, points, alphas, budget, step, min_hits, target_hits) -> list[PathPoint]:
    used = 0
    for i, a in enumerate(alphas):
        need = step if i == 0 else max(step, math.ceil(target_hits / max(_predicted_rate(points, a), 1e-12)))
        n = min(need, budget - used)
        if n <= 0:
            break
        point = spend(a, n)
        used += n
        if point.hits < min_hits:
            break
    left = budget - used
    if left > 0:  # the last point walked: where the trend is least certain and closest to α = 1
        last = max(points)
        spend(last, points[last].spent + left)
    return [points[a] for a in sorted(points)]
