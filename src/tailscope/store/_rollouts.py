"""The rollouts part of a run store: prompts, rollouts with their grids, the sampling cache.

:meth:`RolloutsPart.get_or_sample_many` is the cache every estimator goes through: stored rollouts
first, only the missing (prompt, seed index) pairs sampled, each batch committed as it lands;
stored rollouts missing grid points are rescored by teacher forcing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from ..prompts import Prompt
from ..rollout import Proposal, Rollout, Sampler, SampleRequest
from ._config import (
    ConfigMismatchError,
    RunStoreError,
    _json_roundtrip,
    _to_json,
    config_differences,
    is_informative,
    sampler_settings,
)

__all__ = ["RolloutsPart"]

_ROLLOUT_COLUMNS = ("id, prompt_id, proposal, seed_index, token_ids, text, finish_reason, logprob, "
                    "logprob_reference, logprob_target")


def _proposal_key(proposal: Proposal | str | float) -> str:
    return Proposal.parse(proposal).key


def _where(prompt_id: str | None, proposal: Proposal | str | float | None, n: int | None = None, *,
           table: str = "") -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) selecting rollouts of a prompt, a proposal, seed indices below n."""
    where, args = [], []
    for column, value in (("prompt_id", prompt_id), ("proposal", None if proposal is None else _proposal_key(proposal)),
                          ("seed_index", None if n is None else int(n))):
        if value is not None:
            where.append(f"{table}{column} {'<' if column == 'seed_index' else '='} ?")
            args.append(value)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


def _prompt_record(p: Prompt) -> str:
    return json.dumps({"id": p.id, "text": p.text, "messages": p.messages, "meta": p.meta}, default=_to_json)


def _prompt_from_record(data: str) -> Prompt:
    d = json.loads(data)
    messages = tuple(tuple(m) for m in d["messages"]) if d["messages"] is not None else None
    return Prompt(id=d["id"], text=d["text"], messages=messages, meta=d.get("meta") or {})


class RolloutsPart:
    """Prompts and rollouts of a run (a part of :class:`~tailscope.store.RunStore`)."""

    path: Path
    config: dict[str, Any]
    _conn: sqlite3.Connection
    _checked_samplers: Any

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the RunStore front provides the write transaction

    # ------------------------------------------------------------------ prompts
    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Record prompts by id; a stored id whose prompt differs is an error (rollouts would mix)."""
        stored = self._prompt_hashes([p.id for p in prompts])
        new = [p for p in prompts if p.id not in stored]
        for p in prompts:
            if p.id in stored and stored[p.id] != p.content_hash:
                raise RunStoreError(
                    f"prompt {p.id!r} differs from the prompt this run stored under that id "
                    f"({self._prompt(p.id).preview()!r} vs {p.preview()!r}); give it a new id or use a new run"
                )
        if new:
            with self._write() as conn:
                conn.executemany("INSERT OR IGNORE INTO prompts (id, content_hash, data) VALUES (?, ?, ?)",
                                 [(p.id, p.content_hash, _prompt_record(p)) for p in new])

    def _prompt_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        out = {}
        for pid in set(ids):
            row = self._conn.execute("SELECT content_hash FROM prompts WHERE id = ?", (pid,)).fetchone()
            if row is not None:
                out[pid] = row[0]
        return out

    def _prompt(self, prompt_id: str) -> Prompt:
        row = self._conn.execute("SELECT data FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        if row is None:
            raise RunStoreError(f"no prompt {prompt_id!r} in the run {self.path}")
        return _prompt_from_record(row[0])

    def prompts(self) -> dict[str, Prompt]:
        """The run's prompts by id."""
        return {i: _prompt_from_record(d) for i, d in self._conn.execute("SELECT id, data FROM prompts ORDER BY id")}

    # ------------------------------------------------------------------ rollouts
    def add_rollouts(self, rollouts: Sequence[Rollout], *, source: str = "sampled") -> int:
        """Store a batch of rollouts (their prompts must be stored) in one transaction.

        A rollout whose (prompt, proposal, seed index) is already stored is skipped; grid points
        it brings that are not stored yet are added. Returns the number of new rollouts.
        """
        known = self._prompt_hashes([r.prompt_id for r in rollouts])
        unknown = sorted({r.prompt_id for r in rollouts} - set(known))
        if unknown:
            raise RunStoreError(f"rollouts of prompt ids {unknown[:5]} have no stored prompt; call add_prompts first")
        now = time.time()
        added = 0
        with self._write() as conn:
            for r in rollouts:
                cur = conn.execute(
                    "INSERT INTO rollouts (prompt_id, proposal, seed_index, token_ids, text, finish_reason, logprob, "
                    "logprob_reference, logprob_target, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (prompt_id, proposal, seed_index) DO NOTHING",
                    (r.prompt_id, r.proposal, r.seed_index, np.asarray(r.token_ids, dtype="<i4").tobytes(), r.text,
                     r.finish_reason, r.logprob, r.logprob_reference, r.logprob_target, now),
                )
                added += cur.rowcount
                if r.logprob_grid:
                    (rid,) = conn.execute("SELECT id FROM rollouts WHERE prompt_id = ? AND proposal = ? AND "
                                          "seed_index = ?", (r.prompt_id, r.proposal, r.seed_index)).fetchone()
                    conn.executemany(
                        "INSERT OR IGNORE INTO grid (rollout_id, alpha, logprob, source) VALUES (?, ?, ?, ?)",
                        [(rid, float(a), float(v), source) for a, v in r.logprob_grid.items()])
        return added

    def rollouts(
        self,
        prompt_id: str | None = None,
        proposal: Proposal | str | float | None = None,
        *,
        n: int | None = None,
    ) -> list[Rollout]:
        """Stored rollouts (with every stored grid point), ordered by prompt, proposal, seed index;
        ``n`` keeps seed indices below n."""
        clause, args = _where(prompt_id, proposal, n, table="r.")
        grids: dict[int, dict[float, float]] = {}
        for rid, alpha, lp in self._conn.execute(
                f"SELECT g.rollout_id, g.alpha, g.logprob FROM grid g JOIN rollouts r ON r.id = g.rollout_id "
                f"{clause} ORDER BY g.rollout_id, g.alpha", args):
            grids.setdefault(rid, {})[alpha] = lp
        rows = self._conn.execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts r {clause} "
                                  "ORDER BY r.prompt_id, r.proposal, r.seed_index", args)
        return [Rollout(prompt_id=pid, proposal=prop, seed_index=si,
                        token_ids=tuple(np.frombuffer(tok, dtype="<i4").tolist()), text=text, finish_reason=fr,
                        logprob=lp, logprob_reference=math.nan if lpa is None else lpa, logprob_target=lpb,
                        logprob_grid=grids.get(rid, {}))
                for rid, pid, prop, si, tok, text, fr, lp, lpa, lpb in rows]

    def count(self, prompt_id: str | None = None, proposal: Proposal | str | float | None = None) -> int:
        """Number of stored rollouts (of a prompt, of a proposal)."""
        clause, args = _where(prompt_id, proposal)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM rollouts {clause}", args).fetchone()[0])

    def get_or_sample(
        self,
        sampler: Sampler,
        prompt: Prompt,
        proposal: Proposal | str | float,
        n: int,
        *,
        logprob_grid: Sequence[float] = (),
        progress: Callable[[int], None] | None = None,
    ) -> list[Rollout]:
        """Rollouts with seed indices 0..n−1 of one prompt at one proposal: stored ones first,
        the missing ones sampled (and committed a batch at a time). See :meth:`get_or_sample_many`."""
        return self.get_or_sample_many(sampler, [prompt], proposal, n, logprob_grid=logprob_grid,
                                       progress=progress)[prompt.id]

    def get_or_sample_many(
        self,
        sampler: Sampler,
        prompts: Sequence[Prompt],
        proposal: Proposal | str | float,
        n: int,
        *,
        logprob_grid: Sequence[float] = (),
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, list[Rollout]]:
        """Seed indices 0..n−1 of each prompt at one proposal, by prompt id, in seed order.

        Only missing (prompt, seed index) pairs are sampled, all prompts' together in the sampler's
        batches; each batch is committed as it lands. Each returned rollout's ``logprob_grid`` holds
        exactly the α of ``logprob_grid``: stored rollouts that lack one are rescored by teacher
        forcing (:mod:`tailscope.scoring`), which agrees with the sampler's own values.

        Raises:
            ConfigMismatchError: the sampler's models or settings are not the run's.
            RunStoreError: a prompt id is stored with another prompt.
        """
        if n < 0:
            raise ValueError(f"`n` (={n}) must be >= 0")
        proposal = Proposal.parse(proposal)
        grid = tuple(float(a) for a in logprob_grid)
        if len(set(grid)) != len(grid):
            raise ValueError(f"`logprob_grid` (={list(logprob_grid)}) repeats a value")
        self._check_sampler(sampler)
        self.add_prompts(prompts)
        have = {p.id: {si for (si,) in self._conn.execute(
            "SELECT seed_index FROM rollouts WHERE prompt_id = ? AND proposal = ? AND seed_index < ?",
            (p.id, proposal.key, n))} for p in prompts}
        # a lazy stream: the sampler reads one batch ahead, so a huge n costs no memory up front
        requests = (SampleRequest(p, i) for p in prompts for i in range(n) if i not in have[p.id])
        if any(len(have[p.id]) < n for p in prompts):
            for batch in sampler.iter_batches(requests, proposal, logprob_grid=grid, progress=progress):
                self.add_rollouts(batch)
        out = {p.id: self.rollouts(p.id, proposal, n=n) for p in prompts}
        lacking = [r for rs in out.values() for r in rs if not all(a in r.logprob_grid for a in grid)]
        if lacking:
            self._rescore(sampler, lacking, grid)
            out = {p.id: self.rollouts(p.id, proposal, n=n) for p in prompts}
        return {pid: [dataclasses.replace(r, logprob_grid={a: r.logprob_grid[a] for a in grid}) for r in rs]
                for pid, rs in out.items()}

    def _check_sampler(self, sampler: Sampler) -> None:
        if sampler in self._checked_samplers:
            return
        given = _json_roundtrip(sampler_settings(sampler))
        stored = {k: self.config.get(k) for k in given}
        diff = {k: v for k, v in config_differences(stored, given).items() if not is_informative(k)}
        if diff:
            raise ConfigMismatchError(self.path, diff)
        self._checked_samplers.add(sampler)

    def _rescore(self, sampler: Sampler, rollouts: Sequence[Rollout], grid: tuple[float, ...], chunk: int = 256) -> None:
        """Add the missing grid points of stored rollouts by teacher forcing, committing a chunk at a
        time. A grid point is log q under the rollout's proposal moved to that α
        (:meth:`~tailscope.path.Proposal.moved`); α = 1 is the stored target log-probability, and
        for a pure path point α = 0 is the stored reference log-probability."""
        scorer = sampler.scorer()
        prompts = {pid: self._prompt(pid) for pid in {r.prompt_id for r in rollouts}}
        by_proposal: dict[str, list[Rollout]] = {}
        for r in rollouts:
            by_proposal.setdefault(r.proposal, []).append(r)
        for key, group in by_proposal.items():
            proposal = Proposal.parse(key)
            todo = [a for a in grid if proposal.recorded_field(a) is None]
            moved = [proposal.moved(a) for a in todo]
            for start in range(0, len(group), chunk):
                part = group[start : start + chunk]
                values = scorer.score_rollouts(prompts, part, (), moved) if todo else None
                scored = []
                for i, r in enumerate(part):
                    new = {a: r.grid_logprob(a) for a in grid if a not in todo and a not in r.logprob_grid}
                    if values is not None:
                        new.update({a: float(values[i, j]) for j, a in enumerate(todo) if a not in r.logprob_grid})
                    scored.append(dataclasses.replace(r, logprob_grid=new))
                self.add_rollouts(scored, source="scored")

