"""Versioned schema migrations: `NNNN_name.sql` files applied in order, each in the same
transaction as the version it records. Checks come first and change nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from perdure import exceptions

SQLITE_HEADER = b"SQLite format 3\x00"


def scripts() -> list[tuple[int, str]]:
    """(version, SQL text) of every migration, in order."""
    found = []
    for item in resources.files(__package__).iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), item.read_text(encoding="utf-8")))
    return sorted(found)


LATEST = scripts()[-1][0]


def statements(script: str) -> list[str]:
    """Split a migration into statements (our migrations hold no ';' inside literals)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def check_file(path: Path) -> None:
    """Refuse a file that is not a SQLite database, before SQLite touches it."""
    if path.is_dir():
        raise exceptions.StoreError(f"{path} is a directory, not a database file")
    if not path.exists() or path.stat().st_size == 0:
        if not path.parent.exists():
            raise exceptions.StoreError(
                f"cannot create the database {path}: the directory {path.parent} does not exist"
            )
        return
    with path.open("rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise exceptions.StoreError(
            f"{path} is not a SQLite database; point PERDURE_DATABASE_URL at perdure's "
            "database or at a new file (nothing was changed)"
        )


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a database that belongs to something else, or to a newer perdure."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return
    if "perdure_meta" not in tables:
        raise exceptions.StoreError(
            f"{path} holds tables that are not perdure's ({', '.join(sorted(tables)[:3])}...); "
            "point PERDURE_DATABASE_URL at a new file (nothing was changed)"
        )
    version = current_version(lambda q, p: conn.execute(q, p).fetchall())
    if version > LATEST:
        raise exceptions.StoreError(
            f"{path} has schema version {version}, newer than this perdure knows ({LATEST}); "
            "upgrade perdure (nothing was changed)"
        )


def current_version(rows: Callable[[str, Any], Sequence[Any]]) -> int:
    try:
        found = rows("SELECT value FROM perdure_meta WHERE key = 'schema_version'", {})
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        return 0
    return int(found[0][0]) if found else 0


def apply(conn: sqlite3.Connection, begin: Callable[[], Any]) -> int:
    """Apply what is missing, each migration in one transaction; safe from several
    processes at once (the write lock serializes them, and each re-reads the version)."""
    for version, script in scripts():
        begin()
        try:
            if current_version(lambda q, p: conn.execute(q, p).fetchall()) >= version:
                conn.execute("ROLLBACK")
                continue
            for statement in statements(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO perdure_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return LATEST
