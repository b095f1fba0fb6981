"""The PostgreSQL server tests use: PERDURE_TEST_POSTGRES_URL, else the local one.

Each test gets a schema of its own in that database (fast to make and to drop). Without a
server the PostgreSQL tests skip with one loud line, except under CI=true, where they
must run: a missing server fails them.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest

BASE_URL = os.environ.get("PERDURE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "perdure_t_"
_available: bool | None = None
_created: list[str] = []


def available() -> bool:
    global _available
    if _available is None:
        try:
            import psycopg

            with psycopg.connect(BASE_URL, connect_timeout=3):
                _available = True
        except Exception:
            _available = False
    return _available


def require() -> None:
    if available():
        return
    message = f"no PostgreSQL server at {BASE_URL}: the PostgreSQL tests did not run"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def fresh_url() -> str:
    """A URL whose search_path is a new, empty schema."""
    import psycopg

    require()
    schema = PREFIX + uuid.uuid4().hex[:12]
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    _created.append(schema)
    separator = "&" if "?" in BASE_URL else "?"
    return f"{BASE_URL}{separator}options={quote(f'-csearch_path={schema}')}"


def drop_schemas() -> None:
    """Drop the schemas this test session made (never another session's)."""
    if not _created or not available():
        return
    import psycopg

    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        while _created:
            conn.execute(f"DROP SCHEMA IF EXISTS {_created.pop()} CASCADE")


def execute(database_url: str, statement: str, value: str) -> None:
    """Run one statement behind perdure's back (as another process would), on either
    backend: `{now}` is the current time, `{id}` the value."""
    import time

    if database_url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            db.execute(statement.format(now=time.time(), id="?"), (value,))
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(statement.format(now=time.time(), id="%s"), (value,))
