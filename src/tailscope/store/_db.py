"""The run file: its schema, where runs live, and opening one safely."""

from __future__ import annotations

import json
import sqlite3
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ._config import ConfigMismatchError, RunStoreError, _json_roundtrip, config_differences, is_informative

__all__ = ["connect", "list_runs", "resolve_run", "transaction"]

FORMAT = "tailscope-run"
SCHEMA_VERSION = 1
SUFFIX = ".sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY,
    prompt_id TEXT NOT NULL REFERENCES prompts(id),
    proposal TEXT NOT NULL,
    seed_index INTEGER NOT NULL,
    token_ids BLOB NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    logprob REAL NOT NULL,
    logprob_reference REAL,
    logprob_target REAL NOT NULL,
    created REAL NOT NULL,
    UNIQUE (prompt_id, proposal, seed_index)
);
CREATE TABLE IF NOT EXISTS grid (
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    alpha REAL NOT NULL,
    logprob REAL NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (rollout_id, alpha)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS judges (fingerprint TEXT PRIMARY KEY, spec TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    judge TEXT NOT NULL REFERENCES judges(fingerprint),
    content_hash TEXT NOT NULL,
    flagged INTEGER,
    score REAL,
    error TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (rollout_id, judge)
);
CREATE INDEX IF NOT EXISTS verdicts_by_content ON verdicts (judge, content_hash);
CREATE TABLE IF NOT EXISTS estimates (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    prompt_id TEXT,
    created REAL NOT NULL,
    data TEXT NOT NULL
);
"""




def resolve_run(run: str | Path, root: str | Path = "runs") -> Path:
    """A run's file: ``run`` itself when it is a path (has a directory part or the ``.sqlite`` suffix),
    else ``root/run.sqlite``."""
    path = Path(run)
    if path.suffix in (SUFFIX, ".db") or len(path.parts) > 1:
        return path
    return Path(root) / f"{run}{SUFFIX}"


def list_runs(root: str | Path = "runs") -> list[Path]:
    """The run files in a directory, sorted by name."""
    root = Path(root)
    return sorted(root.glob(f"*{SUFFIX}")) if root.is_dir() else []


def _check_header(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(16)
    if head and head != b"SQLite format 3\x00":
        raise RunStoreError(f"{path} is not a tailscope run store: it is not an SQLite database "
                            f"(it starts with {head[:8]!r})")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error: a batch is stored whole or not at all."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def connect(path: Path, config: Mapping[str, Any] | None, *, readonly: bool, check: bool
            ) -> tuple[sqlite3.Connection, dict[str, Any]]:
    """Open (or create) the run file at ``path``; returns the connection and the stored config.
    See :meth:`RunStore.open` for the rules."""
    exists = path.exists() and path.stat().st_size > 0
    if not exists and (config is None or readonly):
        known = ", ".join(p.stem for p in list_runs(path.parent)) or "none"
        raise RunStoreError(f"no run at {path} (runs in {path.parent}: {known})")
    if exists:
        _check_header(path)
        if not readonly:
            _refuse_foreign(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path, readonly)
    try:
        stored = _read_or_create(conn, path, config, check, readonly)
        if config is not None:
            diff = config_differences(stored, _json_roundtrip(dict(config)))
            hard = {k: v for k, v in diff.items() if not is_informative(k)}
            if hard:
                raise ConfigMismatchError(path, hard)
            if diff:
                warnings.warn(f"the run {path} differs in fields that do not change rollouts: {diff}", stacklevel=3)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise RunStoreError(f"{path} is corrupted or not a tailscope run store ({e})") from None
    except BaseException:
        conn.close()
        raise
    return conn, stored


def _refuse_foreign(path: Path) -> None:
    """Look at an existing file read-only before opening it for writing: opening for writing switches
    the file to WAL mode, which must never happen to somebody else's database."""
    probe = _connect(path, readonly=True)
    try:
        tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return  # a run being created by another process right now
        fmt = probe.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() if "meta" in tables else None
    except sqlite3.DatabaseError as e:
        raise RunStoreError(f"{path} is corrupted or not a tailscope run store ({e})") from None
    finally:
        probe.close()
    if fmt is None or fmt[0] != FORMAT:
        raise RunStoreError(f"{path} is an SQLite database but not a tailscope run store (its tables: "
                            f"{sorted(tables)}); it was left untouched: give another --run")


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    target = f"file:{quote(str(path.resolve()))}?mode=ro" if readonly else str(path)
    conn = sqlite3.connect(target, uri=readonly, timeout=60.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 60000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: durable across process kills
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _read_or_create(conn, path: Path, config, check: bool, readonly: bool) -> dict[str, Any]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables and config is not None and not readonly:
        _create(conn, config)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        raise RunStoreError(f"{path} is an empty SQLite database: not a tailscope run store (or one being created)")
    if "meta" not in tables:
        raise RunStoreError(f"{path} is an SQLite database but not a tailscope run store "
                            f"(its tables: {sorted(tables) or 'none'})")
    if check:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise RunStoreError(f"{path} is corrupted (SQLite integrity check: {result})")
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    if meta.get("format") != FORMAT:
        raise RunStoreError(
            f"{path} is an SQLite database but not a tailscope run store (format {meta.get('format')!r})")
    if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
        raise RunStoreError(f"{path} was written by a newer tailscope (schema {meta['schema_version']}, "
                            f"this one reads {SCHEMA_VERSION}); upgrade tailscope to open it")
    if not readonly:
        _allow_unknown_reference(conn)
    return json.loads(meta["config"])


def _allow_unknown_reference(conn: sqlite3.Connection) -> None:
    """Runs made before switched rollouts skipped the reference kept ``logprob_reference NOT NULL``;
    rebuild that one table without the constraint (row ids, and so grid and verdict rows, unchanged)."""
    columns = {name: notnull for _, name, _, notnull, *_ in conn.execute("PRAGMA table_info(rollouts)")}
    if not columns.get("logprob_reference"):
        return
    table = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS rollouts"):]
    table = table[: table.index(");") + 1].replace("IF NOT EXISTS rollouts", "rollouts_nullable")
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        with transaction(conn):
            conn.execute(table)
            conn.execute("INSERT INTO rollouts_nullable SELECT * FROM rollouts")
            conn.execute("DROP TABLE rollouts")
            conn.execute("ALTER TABLE rollouts_nullable RENAME TO rollouts")
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _create(conn: sqlite3.Connection, config: Mapping[str, Any]) -> None:
    # IF NOT EXISTS and OR IGNORE: two processes creating one run at once agree on the first config
    with transaction(conn):
        for statement in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(statement)
        rows = {"format": FORMAT, "schema_version": str(SCHEMA_VERSION), "created": f"{time.time():.3f}",
                "config": json.dumps(_json_roundtrip(dict(config)), sort_keys=True)}
        conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", rows.items())
