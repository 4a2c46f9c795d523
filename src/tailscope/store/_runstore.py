"""RunStore: the rollouts, verdicts and estimates of one run, in one SQLite file."""

from __future__ import annotations

import math
import sqlite3
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._config import RunStoreError
from ._db import connect, resolve_run, transaction
from ._estimates import EstimatesPart
from ._rollouts import RolloutsPart
from ._verdicts import VerdictsPart

__all__ = ["RunStore"]


class RunStore(RolloutsPart, VerdictsPart, EstimatesPart):
    """One run on disk. Open it with :meth:`open`; use it as a context manager to close it.

    The store is in parts, one per table group: :class:`~._rollouts.RolloutsPart` (prompts,
    rollouts, the sampling cache), :class:`~._verdicts.VerdictsPart`, :class:`~._estimates.EstimatesPart`.

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
