"""The estimates part of a run store: estimates as JSON records, oldest first."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any

from ._config import _to_json

__all__ = ["EstimatesPart"]


class EstimatesPart:
    """Recorded estimates (a part of :class:`~tailscope.store.RunStore`)."""

    _conn: sqlite3.Connection

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the RunStore front provides the write transaction

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

