"""W0, the floor: a loop of INSERT + COMMIT of a ~200-byte row on one connection.

What one durable write costs on this machine at each durability level the systems use:
SQLite WAL+FULL (perdure's default), WAL+NORMAL, rollback journal+FULL (DBOS's SQLite
mode: SQLite's defaults); PostgreSQL with synchronous_commit on (the default) and off.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

ROW = "x" * 200

SQLITE_MODES = {
    "WAL+FULL": ("WAL", "FULL"),
    "WAL+NORMAL": ("WAL", "NORMAL"),
    "rollback+FULL": ("DELETE", "FULL"),
}
POSTGRES_MODES = {"sync on": "on", "sync off": "off"}


def sqlite_floor(directory: Path, journal: str, synchronous: str, commits: int) -> float:
    """µs per commit."""
    path = directory / f"floor-{journal}-{synchronous}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA journal_mode={journal}")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        return _loop(conn, "INSERT INTO t (payload) VALUES (?)", commits)
    finally:
        conn.close()


def postgres_floor(url: str, synchronous_commit: str, commits: int) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET synchronous_commit = {synchronous_commit}")
        conn.execute("DROP TABLE IF EXISTS floor")
        conn.execute("CREATE TABLE floor (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)")
        return _loop(conn, "INSERT INTO floor (payload) VALUES (%s)", commits)


def _loop(conn: Any, insert: str, commits: int) -> float:
    for _ in range(min(50, commits)):  # warm the file, the cache, the statement
        _commit(conn, insert)
    start = time.perf_counter()
    for _ in range(commits):
        _commit(conn, insert)
    return 1e6 * (time.perf_counter() - start) / commits


def _commit(conn: Any, insert: str) -> None:
    conn.execute("BEGIN")
    conn.execute(insert, (ROW,))
    conn.execute("COMMIT")


def w0(job: Any) -> dict[str, Any]:
    commits = int(job.params["commits"])
    if job.backend == "sqlite":
        found = {
            label: sqlite_floor(job.dir, journal, sync, commits)
            for label, (journal, sync) in SQLITE_MODES.items()
        }
        return {"us_per_commit": found, "commits": commits, "sqlite": sqlite3.sqlite_version}
    found = {label: postgres_floor(job.url, value, commits) for label, value in POSTGRES_MODES.items()}
    return {"us_per_commit": found, "commits": commits}


WORKLOADS = {"W0": w0}
