"""The PostgreSQL server tests use: PERDURE_TEST_POSTGRES_URL, else the local one, else a
throwaway cluster of their own.

Each test gets a schema of its own in that database (fast to make and to drop). On a
machine with PostgreSQL's binaries but no server listening, the tests start a throwaway
cluster in a temporary directory for the session (as root, through `runuser postgres`)
and remove it at the end. With neither, the PostgreSQL tests skip with one loud line,
except under CI=true, where they must run: a missing server fails them.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/test"
CHOSEN_URL = os.environ.get("PERDURE_TEST_POSTGRES_URL")
BASE_URL = CHOSEN_URL or LOCAL_URL
PREFIX = "perdure_t_"
_available: bool | None = None
_created: list[str] = []


class Throwaway:
    """A PostgreSQL cluster of the tests' own, in a temporary directory, on a free port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="perdure-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        # PostgreSQL refuses to run as root: then its own user runs it.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        command = [*prefix, str(self.bindir / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> Throwaway:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        atexit.register(self.stop)
        return self

    def restart(self) -> None:
        log = str(self.dir / "log")  # else the server's output holds our pipe open
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        if not self.dir.exists():
            return
        with contextlib.suppress(subprocess.CalledProcessError):  # not running: fine
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


_throwaway: Throwaway | None = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


def binaries() -> Path | None:
    """Where PostgreSQL's server binaries are installed, if they are."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    on_path = shutil.which("initdb")
    if found:
        return Path(found[-1]).parent
    return Path(on_path).parent if on_path else None


def server_for(url: str, chosen: bool) -> tuple[str, Throwaway | None]:
    """The URL the tests use: `url` if a server answers there; else, unless the user chose
    that URL, a throwaway cluster's when the binaries are here; else `url` (unavailable)."""
    if _answers(url) or chosen:
        return url, None
    bindir = binaries()
    if bindir is None:
        return url, None
    throwaway = Throwaway(bindir).start()
    return throwaway.url, throwaway


def available() -> bool:
    global _available, BASE_URL, _throwaway
    if _available is None:
        BASE_URL, _throwaway = server_for(BASE_URL, chosen=CHOSEN_URL is not None)
        _available = _answers(BASE_URL)
    return _available


def require() -> None:
    if available():
        return
    message = f"no PostgreSQL server at {BASE_URL}: the PostgreSQL tests did not run"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def restartable() -> Iterator[tuple[str, Callable[[], None]]]:
    """A database on a server this test may restart, and how to restart it: a throwaway
    cluster of its own where the binaries are installed (so other users of the machine's
    server are left alone), else the server the tests use, if it can be restarted."""
    bindir = binaries()
    if bindir is None:
        if not can_restart():
            message = f"this test restarts the server, and cannot restart {BASE_URL}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        yield fresh_url(), restart
        return
    throwaway = Throwaway(bindir).start()
    try:
        yield throwaway.url, throwaway.restart
    finally:
        throwaway.stop()


def can_restart() -> bool:
    """Whether the tests can restart the server they use: their throwaway cluster, or this
    machine's own (Debian's pg_ctlcluster)."""
    require()
    local = BASE_URL == LOCAL_URL and shutil.which("pg_ctlcluster") is not None
    return _throwaway is not None or local


def restart() -> None:
    """Restart the server the tests use (the chaos test's fault)."""
    if _throwaway is not None:
        _throwaway.restart()
        return
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=60,
    )


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


def finish() -> None:
    """At the end of the session: drop the schemas it made (never another session's), and
    remove its throwaway cluster, if it made one."""
    drop_schemas()
    if _throwaway is not None:
        _throwaway.stop()


def drop_schemas() -> None:
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
