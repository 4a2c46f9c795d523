"""Choosing an importance-sampling proposal by the cross-entropy method (METHODS.md §2).

The zero-variance proposal for μ = E_{q_1}[f] is q* ∝ f q_1. The cross-entropy method moves a
parametric proposal q_φ toward it: sample from the current proposal on calibration prompts, weight
each hit by w = q_1 / q_current, and pick the φ that maximises Σ w f log q_φ(y) (each prompt's
weights normalised to sum to one, so every calibration prompt counts the same); repeat from the
new φ. Only hits enter the objective, and for a hit y the log-probability of every candidate
(path point α0, defensive mixture λ, switch point t) follows from two per-token columns,
log q_α0(y_t) and log q_1(y_t):

    switching:  Σ_{t < t_switch} log q_α0(y_t) + Σ_{t ≥ t_switch} log q_1(y_t)
    mixture:    Σ_t log(λ q_α0(y_t) + (1 − λ) q_1(y_t))

The same search chooses the switch point of path MIS's proposals (:func:`tune_switch`): the family
is then the balance-heuristic mixture Σ_k (n_k/N) q_{α_k, s} of the walk's points, each switching
to the target after s tokens, and the hits are weighted by their balance-heuristic contributions.

The calibration prompts must not be the prompts later scored. :func:`calibration_split` sets
them aside and :func:`tune_settings` runs the search a method's settings ask for (``"tune"``); the
command line and the evaluation suites both go through these two.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..rollout import Proposal
from ..prompts import Prompt
from ..scoring import Scorer
from ._source import RolloutSource
from .mis import balance_heuristic
from .schedule import DEFAULT_GRID, walk_path

__all__ = ["TUNE", "ProposalSearch", "SwitchSearch", "calibration_split", "candidate_log_q", "needs_search",
           "tune_proposal", "tune_settings", "tune_switch"]

TUNE = "tune"


@dataclass
class ProposalSearch:
    """The chosen proposal and the search's record."""

    proposal: Proposal
    rounds: list[dict] = field(default_factory=list)
    spent: dict[str, int] = field(default_factory=dict)

    @property
    def rollouts(self) -> int:
        """Distinct rollouts drawn (a proposal drawn again in a later round reuses its rollouts)."""
        return sum(self.spent.values())


def candidate_log_q(per_token: np.ndarray, proposal: Proposal, alpha_column: int, target_column: int) -> float:
    """log q_proposal(y) from per-token columns of log q_α (rows are reply positions), by
    :meth:`Proposal.log_q` — the arithmetic the sampler draws with."""
    steps = np.arange(per_token.shape[0])
    return float(proposal.log_q(per_token[:, alpha_column], per_token[:, target_column], steps).sum())


def tune_proposal(
    source: RolloutSource,
    scorer: Scorer,
    calibration: Sequence[Prompt],
    per_prompt: int = 200,
    *,
    alphas: Sequence[float] = (0.0, 0.25, 0.5),
    mixtures: Sequence[float] = (0.0, 0.5, 0.9),
    switches: Sequence[int | None] = (None, 4, 8, 16, 32),
    rounds: int = 2,
    start: Proposal | str = "a=0",
) -> ProposalSearch:
    """Cross-entropy-method search over (α0, λ, t_switch) on calibration prompts.

    Each round draws ``per_prompt`` rollouts per calibration prompt from the current proposal.
    Returns the start proposal unchanged when no round sees a hit.
    """
    if not calibration:
        raise ValueError("the proposal search needs at least one calibration prompt")
    candidates = [Proposal(alpha=a, mixture=m, switch_after=s)
                  for a, m, s in itertools.product(alphas, mixtures, switches)]
    columns = sorted({*map(float, alphas), 1.0})
    current = Proposal.parse(start)
    search = ProposalSearch(current)
    for rnd in range(rounds):
        hits_y, hits_prompt, hits_logw = [], [], []
        for prompt in calibration:
            obs = source.draw(prompt, current, per_prompt)
            key = f"{prompt.id}|{current.key}"
            search.spent[key] = max(search.spent.get(key, 0), len(obs))
            for o in obs:
                if o.flagged:
                    hits_y.append(o.rollout)
                    hits_prompt.append(prompt)
                    hits_logw.append(o.rollout.logprob_target - o.rollout.logprob)
        if not hits_y:
            search.rounds.append({"round": rnd, "proposal": current.key, "hits": 0})
            continue
        per_token = scorer.token_logprobs(hits_prompt, [r.token_ids for r in hits_y], columns)
        logw = np.array(hits_logw)
        weights = np.zeros_like(logw)
        ids = np.array([p.id for p in hits_prompt])
        for pid in set(ids):  # normalise per prompt: every calibration prompt counts the same
            m = ids == pid
            weights[m] = np.exp(logw[m] - logw[m].max())
            weights[m] /= weights[m].sum()
        target_col = columns.index(1.0)
        scores = []
        for cand in candidates:
            col = columns.index(cand.alpha)
            lq = np.array([candidate_log_q(t, cand, col, target_col) for t in per_token])
            scores.append(float((weights * lq).sum()))
        best = candidates[int(np.argmax(scores))]
        search.rounds.append({"round": rnd, "proposal": current.key, "hits": len(hits_y), "chosen": best.key,
                              "objective": max(scores)})
        current = best
    search.proposal = current
    return search


@dataclass
class SwitchSearch:
    """The switch point chosen for path MIS's proposals and the search's record."""

    switch_after: int | None
    rounds: list[dict] = field(default_factory=list)
    spent: dict[str, int] = field(default_factory=dict)

    @property
    def rollouts(self) -> int:
        return sum(self.spent.values())


def tune_switch(
    source: RolloutSource,
    scorer: Scorer,
    calibration: Sequence[Prompt],
    budget: int,
    *,
    switches: Sequence[int | None] = (None, 2, 4, 8, 16, 32),
    grid: Sequence[float] = DEFAULT_GRID,
    rounds: int = 2,
    start: int | None = None,
    **walk: float,
) -> SwitchSearch:
    """Cross-entropy choice of the switch point s of path MIS's proposals, on calibration prompts.

    Each round walks the path on every calibration prompt with ``budget`` rollouts at the current
    switch point (the walk of :func:`~tailscope.estimators.mis`), weights each hit y by its
    balance-heuristic contribution (normalised per prompt) and picks the s that maximises
    Σ w log q_mix,s(y), with q_mix,s = Σ_k (n_k/N) q_{α_k, s} over the walked points.
    Returns ``start`` unchanged when no round sees a hit.
    """
    if not calibration:
        raise ValueError("the switch search needs at least one calibration prompt")
    current = start
    search = SwitchSearch(current)
    for rnd in range(rounds):
        tables, weights, shares = [], [], []
        for prompt in calibration:
            points = walk_path(source, prompt, budget, grid=grid, switch_after=current, **walk)
            for p in points:
                key = f"{prompt.id}|{p.proposal.key}"
                search.spent[key] = max(search.spent.get(key, 0), p.spent)
            mean, _, g = balance_heuristic(points)
            if mean <= 0:
                continue
            judged = [o.rollout for p in points for o in p.observations if o.flagged is not None]
            picked = [(r, w) for r, w in zip(judged, g) if w > 0]
            counts = np.array([p.n for p in points], dtype=float)
            share = np.log(np.where(counts > 0, counts / counts.sum(), 1.0))
            alphas = [p.alpha for p in points]
            columns = sorted({*alphas, 1.0})
            per_token = scorer.token_logprobs([prompt] * len(picked), [r.token_ids for r, _ in picked], columns)
            total = sum(w for _, w in picked)
            for table, (_, w) in zip(per_token, picked):
                tables.append((table, [columns.index(a) for a in alphas], columns.index(1.0)))
                weights.append(w / total)
                shares.append(share)
        if not tables:
            search.rounds.append({"round": rnd, "switch_after": current, "hits": 0})
            continue
        scores = []
        for cand in switches:
            objective = 0.0
            for (table, cols, target_col), w, share in zip(tables, weights, shares):
                logs = [candidate_log_q(table, Proposal(0.0, switch_after=cand), c, target_col) for c in cols]
                objective += w * float(np.logaddexp.reduce(share + np.array(logs)))
            scores.append(objective)
        best = switches[int(np.argmax(scores))]
        search.rounds.append({"round": rnd, "switch_after": current, "hits": len(tables), "chosen": best,
                              "objective": max(scores)})
        current = best
    search.switch_after = current
    return search


def calibration_split(prompts: Sequence[Prompt], k: int, *, seed: int = 0, exclude: Sequence[str] = ()) -> list[Prompt]:
    """``k`` calibration prompts drawn at random (seeded) from ``prompts`` outside ``exclude``, in file order.

    The one split rule of tailscope: a seeded draw without replacement, so the split does not
    follow the order of the prompt file (a file sorted by topic would otherwise give a
    calibration split from one topic), and the same seed gives the same split. The command line
    draws from all prompts and scores the rest; an evaluation draws from the prompts it does not
    score.
    """
    excluded = set(exclude)
    pool = [p for p in prompts if p.id not in excluded]
    if k < 1 or len(pool) < k:
        raise ValueError(f"a calibration split of {k} prompts needs {k} unscored prompts, have {len(pool)}")
    rng = np.random.default_rng(seed + 7919)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]


def needs_search(method: str, settings: dict[str, Any]) -> bool:
    """Whether ``settings`` ask for a search: ``proposal="tune"`` (IS) or ``switch_after="tune"`` (MIS, LPE)."""
    return (method == "is" and settings.get("proposal") == TUNE) or settings.get("switch_after") == TUNE


def tune_settings(
    method: str, settings: dict[str, Any], source: RolloutSource, scorer: Scorer, calibration: Sequence[Prompt],
    budget: int, *, rounds: int = 2,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``settings`` with every ``"tune"`` replaced by the value the search picks on ``calibration``.

    IS's proposal: :func:`tune_proposal` with ``max(50, budget // 2)`` rollouts per prompt and
    round; the switch point of MIS (or LPE): :func:`tune_switch` walking ``budget`` rollouts per
    prompt and round with the method's grid and schedule. Returns the settings and a record (what
    was chosen, the rollouts spent, the rounds, the calibration prompts).
    """
    settings, record = dict(settings), {}
    if method == "is" and settings.get("proposal") == TUNE:
        search = tune_proposal(source, scorer, calibration, per_prompt=max(50, budget // 2), rounds=rounds)
        settings["proposal"] = search.proposal.key
        record = {"proposal": settings["proposal"], "rollouts": search.rollouts, "rounds": search.rounds}
    elif settings.get("switch_after") == TUNE:
        walk = {k: v for k, v in settings.items() if k in {"grid", "schedule"}}
        found = tune_switch(source, scorer, calibration, budget, rounds=rounds, **walk)
        settings["switch_after"] = found.switch_after
        record = {"switch_after": found.switch_after, "rollouts": found.rollouts, "rounds": found.rounds}
    if record:
        record["calibration_prompts"] = [p.id for p in calibration]
    return settings, record
