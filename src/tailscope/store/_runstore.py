"""RunStore: the rollouts, verdicts and estimates of one run, in one SQLite file."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..judges import Judge, Verdict, content_hash
from ..prompts import Prompt
from ..rollout import Proposal, Rollout, SampleRequest, judge_text
from ._config import (
    ConfigMismatchError,
    RunStoreError,
    _json_roundtrip,
    _to_json,
    config_differences,
    is_informative,
    sampler_settings,
)
from ._db import connect, resolve_run, transaction

__all__ = ["RunStore"]

_ROLLOUT_COLUMNS = ("id, prompt_id, proposal, seed_index, token_ids, text, finish_reason, logprob, "
                    "logprob_reference, logprob_target")


def _proposal_key(proposal: Proposal | str | float) -> str:
    return Proposal.parse(proposal).key


def _prompt_record(p: Prompt) -> str:
    return json.dumps({"id": p.id, "text": p.text, "messages": p.messages, "meta": p.meta}, default=_to_json)


def _prompt_from_record(data: str) -> Prompt:
    d = json.loads(data)
    messages = tuple(tuple(m) for m in d["messages"]) if d["messages"] is not None else None
    return Prompt(id=d["id"], text=d["text"], messages=messages, meta=d.get("meta") or {})


class RunStore:
    """One run on disk. Open it with :meth:`open`; use it as a context manager to close it.

    Rollouts are keyed by (prompt id, proposal key, seed index), unique; verdicts by (rollout,
    judge fingerprint); estimates are JSON records. Every write is one transaction. A RunStore is
    used from the thread that opened it; other threads and processes open their own.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, config: dict[str, Any], readonly: bool):
        self.path, self._conn, self.config, self.readonly = path, conn, config, readonly
        self._checked_samplers: weakref.WeakSet = weakref.WeakSet()

    @property
    def name(self) -> str:
        return self.path.stem

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        run: str | Path,
        config: Mapping[str, Any] | None = None,
        *,
        root: str | Path = "runs",
        readonly: bool = False,
        check: bool = True,
    ) -> RunStore:
        """Open a run, creating it when ``config`` is given and the file does not exist.

        Args:
            run: a run name (a file in ``root``) or a path.
            config: the run's config (see :func:`run_config`). For an existing run it must equal
                the stored one: :class:`ConfigMismatchError` names the fields that differ (the
                ``code`` version only warns). None opens an existing run as it is.
            root: the directory of named runs.
            readonly: open without write access (several readers may also read while one writes).
            check: run SQLite's quick integrity check on opening.

        Raises:
            RunStoreError: no such run, a file that is not a run store, or a corrupted one.
        """
        path = resolve_run(run, root)
        conn, stored = connect(path, config, readonly=readonly, check=check)
        return cls(path, conn, stored, readonly)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise RunStoreError(f"the run {self.path} was opened read-only")
        with transaction(self._conn) as conn:
            yield conn

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
        where, args = [], []
        if prompt_id is not None:
            where.append("r.prompt_id = ?")
            args.append(prompt_id)
        if proposal is not None:
            where.append("r.proposal = ?")
            args.append(_proposal_key(proposal))
        if n is not None:
            where.append("r.seed_index < ?")
            args.append(int(n))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        grids: dict[int, dict[float, float]] = {}
        for rid, alpha, lp in self._conn.execute(
                f"SELECT g.rollout_id, g.alpha, g.logprob FROM grid g JOIN rollouts r ON r.id = g.rollout_id "
                f"{clause} ORDER BY g.rollout_id, g.alpha", args):
            grids.setdefault(rid, {})[alpha] = lp
        rows = self._conn.execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts r {clause} "
                                  "ORDER BY r.prompt_id, r.proposal, r.seed_index", args)
        return [Rollout(prompt_id=pid, proposal=prop, seed_index=si,
                        token_ids=tuple(np.frombuffer(tok, dtype="<i4").tolist()), text=text, finish_reason=fr,
                        logprob=lp, logprob_reference=math.nan if lpa is None else lpa, logprob_target=lpb, logprob_grid=grids.get(rid, {}))
                for rid, pid, prop, si, tok, text, fr, lp, lpa, lpb in rows]

    def count(self, prompt_id: str | None = None, proposal: Proposal | str | float | None = None) -> int:
        """Number of stored rollouts (of a prompt, of a proposal)."""
        where, args = [], []
        if prompt_id is not None:
            where.append("prompt_id = ?")
            args.append(prompt_id)
        if proposal is not None:
            where.append("proposal = ?")
            args.append(_proposal_key(proposal))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return int(self._conn.execute(f"SELECT COUNT(*) FROM rollouts {clause}", args).fetchone()[0])

    def get_or_sample(
        self,
        sampler: Any,
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
        sampler: Any,
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
        # a stream, read a batch ahead: 10^8 missing rollouts must not become 10^8 request objects first
        requests = (SampleRequest(p, i) for p in prompts for i in range(n) if i not in have[p.id])
        for batch in sampler.iter_batches(requests, proposal, logprob_grid=grid, progress=progress):
            self.add_rollouts(batch)
        out = {p.id: self.rollouts(p.id, proposal, n=n) for p in prompts}
        lacking = [r for rs in out.values() for r in rs if not all(a in r.logprob_grid for a in grid)]
        if lacking:
            self._rescore(sampler, lacking, grid)
            out = {p.id: self.rollouts(p.id, proposal, n=n) for p in prompts}
        return {pid: [dataclasses.replace(r, logprob_grid={a: r.logprob_grid[a] for a in grid}) for r in rs]
                for pid, rs in out.items()}

    def _check_sampler(self, sampler: Any) -> None:
        if sampler in self._checked_samplers:
            return
        given = _json_roundtrip(sampler_settings(sampler))
        stored = {k: self.config.get(k) for k in given}
        diff = {k: v for k, v in config_differences(stored, given).items() if not is_informative(k)}
        if diff:
            raise ConfigMismatchError(self.path, diff)
        self._checked_samplers.add(sampler)

    def _rescore(self, sampler: Any, rollouts: Sequence[Rollout], grid: tuple[float, ...], chunk: int = 256) -> None:
        """Add the missing grid points of stored rollouts by teacher forcing, committing a chunk at a
        time. A grid point is log q under the rollout's proposal moved to that α
        (:meth:`~tailscope.path.Proposal.moved`); α = 1 is the stored target log-probability, and
        for a pure path point α = 0 is the stored reference log-probability."""
        try:
            from ..scoring import Scorer
        except ImportError as e:
            raise RunStoreError(f"stored rollouts lack log-probabilities at some of α = {list(grid)} and "
                                f"teacher-forced scoring is unavailable ({e})") from None
        scorer = sampler.scorer() if hasattr(sampler, "scorer") else Scorer(sampler.pair, temperature=sampler.temperature,
                                                                            chat=sampler.chat)
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

    # ------------------------------------------------------------------ verdicts
    def _stored_verdicts(self, fp: str, rollouts: Sequence[Rollout]) -> tuple[list[int], dict[int, Verdict]]:
        """The rollouts' row ids and their stored verdicts by this judge, by indexed lookups per
        (prompt, proposal): cheap when an estimator judges one prompt at a time in a large run."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(rollouts):
            groups.setdefault((r.prompt_id, r.proposal), []).append(i)
        ids: list[int] = [0] * len(rollouts)
        stored: dict[int, Verdict] = {}
        missing = []
        for (pid, prop), positions in groups.items():
            index = dict(self._conn.execute("SELECT seed_index, id FROM rollouts WHERE prompt_id = ? AND proposal = ?",
                                            (pid, prop)))
            for i in positions:
                if rollouts[i].seed_index not in index:
                    missing.append(f"({pid!r}, {prop!r}, {rollouts[i].seed_index})")
                ids[i] = index.get(rollouts[i].seed_index, 0)
            for rid, flagged, score, error in self._conn.execute(
                    "SELECT v.rollout_id, v.flagged, v.score, v.error FROM verdicts v JOIN rollouts r "
                    "ON r.id = v.rollout_id WHERE v.judge = ? AND r.prompt_id = ? AND r.proposal = ?", (fp, pid, prop)):
                stored[rid] = Verdict.failed(error) if error is not None else Verdict(bool(flagged), score)
        if missing:
            raise RunStoreError(f"{len(missing)} rollouts are not stored in the run {self.path} (first: "
                                f"{missing[0]}); store them with get_or_sample or add_rollouts first")
        return ids, stored

    def _verdict_by_content(self, fp: str, key: str) -> Verdict | None:
        row = self._conn.execute("SELECT flagged, score FROM verdicts WHERE judge = ? AND content_hash = ? AND "
                                 "error IS NULL LIMIT 1", (fp, key)).fetchone()
        return None if row is None else Verdict(bool(row[0]), row[1])

    def judge(
        self,
        judge: Judge,
        rollouts: Sequence[Rollout],
        *,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> list[Verdict]:
        """Verdicts of ``judge`` on stored rollouts, in order, judging only what has no verdict yet.

        Verdicts are keyed by the judge's fingerprint; a completion whose text was already judged
        (in this run, with the same prompt) reuses that verdict. Failed verdicts are stored as failed
        and judged again on the next call. Each batch of ``batch_size`` is committed as it lands.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` (={batch_size}) must be >= 1")
        fp = judge.fingerprint
        ids, verdicts = self._stored_verdicts(fp, rollouts)
        texts = {pid: judge_text(self._prompt(pid)) for pid in {r.prompt_id for r in rollouts}}
        items = [(texts[r.prompt_id], r.text) for r in rollouts]
        keys = [content_hash(*item) for item in items]
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO judges (fingerprint, spec, description) VALUES (?, ?, ?)",
                         (fp, judge.spec, judge.description))
        unjudged = [i for i, rid in enumerate(ids) if not (rid in verdicts and verdicts[rid].ok)]
        reuse, todo = [], []
        for i in unjudged:
            known = self._verdict_by_content(fp, keys[i])
            if known is None:
                todo.append(i)
            else:
                reuse.append((ids[i], keys[i], known))
                verdicts[ids[i]] = known
        self._put_verdicts(fp, reuse)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            fresh = judge.judge([items[i] for i in chunk])
            if len(fresh) != len(chunk):
                raise RunStoreError(f"judge {judge.spec!r} returned {len(fresh)} verdicts for {len(chunk)} items")
            self._put_verdicts(fp, [(ids[i], keys[i], v) for i, v in zip(chunk, fresh)])
            verdicts.update({ids[i]: v for i, v in zip(chunk, fresh)})
            if progress is not None:
                progress(len(chunk))
        return [verdicts[rid] for rid in ids]

    def _put_verdicts(self, fp: str, rows: Sequence[tuple[int, str, Verdict]]) -> None:
        if not rows:
            return
        now = time.time()
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO verdicts (rollout_id, judge, content_hash, flagged, score, error, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rollout_id, judge) DO UPDATE SET "
                "content_hash = excluded.content_hash, flagged = excluded.flagged, score = excluded.score, "
                "error = excluded.error, created = excluded.created",
                [(rid, fp, key, None if v.flagged is None else int(v.flagged), v.score, v.error, now)
                 for rid, key, v in rows])

    def examples(self, prompt_id: str, judge: Judge | str, k: int = 2) -> list[dict[str, Any]]:
        """Up to ``k`` judged completions of a prompt for people to read: flagged ones first, then the
        target's own (proposal ``a=1``), each as {proposal, seed_index, text, flagged}. ``judge`` is a
        judge or the spec of one this run has used."""
        if isinstance(judge, str):
            row = self._conn.execute("SELECT fingerprint FROM judges WHERE spec = ?", (judge,)).fetchone()
            if row is None:
                return []
            fingerprint = row[0]
        else:
            fingerprint = judge.fingerprint
        rows = self._conn.execute(
            "SELECT r.proposal, r.seed_index, r.text, v.flagged FROM verdicts v JOIN rollouts r ON r.id = v.rollout_id "
            "WHERE v.judge = ? AND r.prompt_id = ? AND v.error IS NULL "
            "ORDER BY v.flagged DESC, r.proposal = 'a=1' DESC, r.seed_index, r.proposal LIMIT ?",
            (fingerprint, prompt_id, int(k)))
        return [{"proposal": prop, "seed_index": si, "text": text, "flagged": bool(flagged)}
                for prop, si, text, flagged in rows]

    # ------------------------------------------------------------------ estimates
    def record_estimate(self, name: str, estimate: Any, *, prompt_id: str | None = None) -> int:
        """Store an estimate (a dataclass or JSON-able mapping) under a name; returns its id."""
        data = json.dumps(estimate, default=_to_json, allow_nan=True)
        with self._write() as conn:
            cur = conn.execute("INSERT INTO estimates (name, prompt_id, created, data) VALUES (?, ?, ?, ?)",
                               (name, prompt_id, time.time(), data))
        return int(cur.lastrowid)

    def estimates(self, name: str | None = None, *, prompt_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded estimates, oldest first: dicts with id, name, prompt_id, created and data."""
        rows = self._conn.execute("SELECT id, name, prompt_id, created, data FROM estimates ORDER BY id")
        return [{"id": i, "name": nm, "prompt_id": pid, "created": c, "data": json.loads(d)}
                for i, nm, pid, c, d in rows
                if (name is None or nm == name) and (prompt_id is None or pid == prompt_id)]

    # ------------------------------------------------------------------ reading
    def summary(self) -> dict[str, Any]:
        """Counts for people: rollouts per proposal, prompts, verdicts per judge, estimates."""
        q = self._conn.execute
        created = q("SELECT value FROM meta WHERE key = 'created'").fetchone()
        judges = []
        for fp, spec, desc in q("SELECT fingerprint, spec, description FROM judges ORDER BY spec"):
            flagged, ok, failed = q("SELECT COALESCE(SUM(flagged = 1), 0), COALESCE(SUM(error IS NULL), 0), "
                                    "COALESCE(SUM(error IS NOT NULL), 0) FROM verdicts WHERE judge = ?",
                                    (fp,)).fetchone()
            judges.append({"spec": spec, "fingerprint": fp, "description": desc,
                           "flagged": flagged, "judged": ok, "failed": failed})
        return {
            "name": self.name, "path": str(self.path),
            "created": float(created[0]) if created else math.nan,
            "prompts": q("SELECT COUNT(*) FROM prompts").fetchone()[0],
            "rollouts": q("SELECT COUNT(*) FROM rollouts").fetchone()[0],
            "proposals": dict(q("SELECT proposal, COUNT(*) FROM rollouts GROUP BY proposal ORDER BY proposal")),
            "judges": judges,
            "estimates": q("SELECT COUNT(*) FROM estimates").fetchone()[0],
            "config": self.config,
        }

    def records(self) -> Iterator[dict[str, Any]]:
        """Every rollout as a flat record with its grid and its verdicts (by judge spec), for export."""
        specs = dict(self._conn.execute("SELECT fingerprint, spec FROM judges"))
        verdicts: dict[tuple, dict[str, dict]] = {}
        for pid, prop, si, fp, flagged, score, error in self._conn.execute(
                "SELECT r.prompt_id, r.proposal, r.seed_index, v.judge, v.flagged, v.score, v.error "
                "FROM verdicts v JOIN rollouts r ON r.id = v.rollout_id"):
            verdicts.setdefault((pid, prop, si), {})[specs.get(fp, fp)] = {
                "flagged": None if flagged is None else bool(flagged), "score": score, "error": error}
        for r in self.rollouts():
            rec = r.to_dict()
            rec["verdicts"] = verdicts.get((r.prompt_id, r.proposal, r.seed_index), {})
            yield rec
