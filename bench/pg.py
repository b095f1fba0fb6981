"""The PostgreSQL server the bench uses: a fresh database per measurement (bench_*),
its settings, and the pids of its backends (for CPU seconds from /proc)."""

from __future__ import annotations

import os
from typing import Any

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _connect(url: str = ADMIN_URL) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def url_of(name: str) -> str:
    head, _, _ = ADMIN_URL.rpartition("/")
    return f"{head}/{name}"


def available() -> str | None:
    """None when the server answers, else why not."""
    try:
        with _connect() as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        return f"{type(error).__name__}: {error}".strip()
    return None


def create(name: str) -> str:
    """A new empty database (dropped first if a crashed run left it); its URL."""
    assert name.startswith("bench_"), name
    with _connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url_of(name)


def copy(template: str, name: str) -> str:
    assert name.startswith("bench_"), name
    with _connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return url_of(name)


def drop(name: str) -> None:
    assert name.startswith("bench_"), name
    with _connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_pids(name: str, conn: Any = None) -> list[int]:
    """The pids of this database's backends (on `conn` if given: a sampler keeps one open
    rather than start a backend for each look)."""
    if conn is None:
        with _connect() as own:
            return backend_pids(name, own)
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def connect() -> Any:
    return _connect()


def size(name: str) -> int:
    with _connect() as conn:
        return int(conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0])


def settings() -> dict[str, str]:
    names = ("server_version", "synchronous_commit", "fsync", "wal_sync_method",
             "shared_buffers", "commit_delay")
    with _connect() as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}
