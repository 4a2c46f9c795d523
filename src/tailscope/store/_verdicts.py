"""The verdicts part of a run store: each judge's verdicts on stored rollouts, judged once."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..judges import Judge, Verdict, content_hash
from ..prompts import Prompt
from ..rollout import Rollout, judge_text
from ._config import RunStoreError

__all__ = ["VerdictsPart"]


class VerdictsPart:
    """Verdicts keyed by (rollout, judge fingerprint) (a part of :class:`~tailscope.store.RunStore`)."""

    path: Path
    _conn: sqlite3.Connection

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the RunStore front provides the write transaction

    def _prompt(self, prompt_id: str) -> Prompt:
        raise NotImplementedError  # provided by the rollouts part

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
