"""The SQLite store: the embedded default. WAL, one writer, synchronous=FULL by default.

The batching thread and the operations come from `batched.BatchedStore`; this module
holds what is SQLite's own: the file checks, WAL and busy handling, liveness through an
fcntl lock beside the database, and wake-ups through datagram sockets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from perdure import exceptions
from perdure.store import base, batched, connection, migrations, ops, sql, wakeup

T = TypeVar("T")
Op = Callable[[ops.Tx], Any]
BUSY_TIMEOUT = 60.0  # seconds a write waits for another process's transaction
# Commits between two WAL checkpoints, made on the store's thread: a write made at once
# on the event loop's thread must not copy the WAL into the database there (SQLite's
# automatic checkpoint would, at the commit that crosses its threshold of 1,000 pages; a
# checkpoint writes about ten, so this keeps the WAL near that size).
CHECKPOINT_EVERY = 100
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "off": "OFF", "extra": "EXTRA"}


def path_from_url(url: str) -> Path:
    """`sqlite:///relative/path.db` or `sqlite:////absolute/path.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise exceptions.ConfigurationError(
            f"cannot read the database URL {url!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    return Path(url[len(prefix) :])


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.q: Any = sql
        self.now = time.time()

    def _params(self, query: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**params, "now": self.now} if _uses_now(query) else params

    def rows(self, query: str, params: Mapping[str, Any]) -> Sequence[ops.Row]:
        found: Sequence[ops.Row] = self.conn.execute(query, self._params(query, params)).fetchall()
        return found

    def rows_later(self, query: str, params: Mapping[str, Any]) -> Callable[[], Sequence[ops.Row]]:
        found = self.rows(query, params)
        return lambda: found

    def run(self, query: str, params: Mapping[str, Any]) -> int:
        return self.conn.execute(query, self._params(query, params)).rowcount

    def send(self, query: str, params: Mapping[str, Any]) -> None:
        self.conn.execute(query, self._params(query, params))

    def count_later(self, query: str, params: Mapping[str, Any]) -> Callable[[], int]:
        count = self.run(query, params)
        return lambda: count

    def fenced_entry(self, params: Mapping[str, Any]) -> Callable[[], bool]:
        written = self.run(self.q.UPSERT_ENTRY_FENCED, params) > 0
        return lambda: written

    def flush(self) -> None:
        pass  # every statement was run as it came

    def values(self, query: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        cursor.row_factory = None
        found: Sequence[tuple[Any, ...]] = cursor.execute(
            query, self._params(query, params)
        ).fetchall()
        return found

    def values_later(
        self, query: str, params: Mapping[str, Any]
    ) -> Callable[[], Sequence[tuple[Any, ...]]]:
        found = self.values(query, params)
        return lambda: found


@functools.cache
def _uses_now(query: str) -> bool:
    return re.search(r":now\b", query) is not None


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error)
    return "locked" in text or "busy" in text


def _retry_busy(fn: Callable[[], T]) -> T:
    """Run fn, retrying while another process holds the write lock: our own tight loop,
    never SQLite's busy handler, whose millisecond sleeps would set the latency."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = 0.00002
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.001)


class SqliteStore(batched.BatchedStore):
    """The Store on one SQLite file, shared by any number of processes on one machine."""

    label = "sqlite"
    # A write transaction begun with BEGIN IMMEDIATE holds the file's write lock: none of
    # its statements waits on another process, so a lone write may run on the caller's
    # thread. (On PostgreSQL any statement may wait on a row lock: writes stay on the
    # store's thread there, off the event loop.)
    _inline_writes = True

    def __init__(self, url: str, *, synchronous: str = "full") -> None:
        super().__init__()
        self.path = path_from_url(url)
        mode = SYNCHRONOUS.get(synchronous.lower())
        if mode is None:
            raise exceptions.ConfigurationError(
                f"sqlite_synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}"
            )
        self._synchronous = mode
        self._mode = mode  # the connection's synchronous setting now
        self._commits = 0  # since the last WAL checkpoint
        self.wakeup = wakeup.Wakeup(self.path)

    def _closed(self) -> None:
        for worker_id in list(self._locks):
            self._unlock(worker_id)
        self.wakeup.close()

    def open_sync(self) -> None:
        """For threads without an event loop (the CLI's checks)."""
        asyncio.run(self.open())

    def notify(self, cancel: bool = False) -> None:
        self.wakeup.notify(cancel)

    def _committed(self, wake: str | None) -> None:
        if wake is not None:
            with contextlib.suppress(OSError):  # best effort: the poll stays the fallback
                self.wakeup.notify(wake == connection.CANCEL)

    def _tx(self, conn: sqlite3.Connection) -> ops.Tx:
        return _Tx(conn)

    def _begin(self, conn: sqlite3.Connection, durable: bool) -> None:
        self._durability(conn, durable)
        _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))

    def _try_begin(self, conn: sqlite3.Connection, durable: bool) -> bool:
        self._durability(conn, durable)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if _is_busy(error):
                return False
            raise
        return True

    def _durability(self, conn: sqlite3.Connection, durable: bool) -> None:
        # In WAL mode, NORMAL commits without an fsync (the next FULL commit's fsync
        # covers them); never stricter than the database's own setting.
        keep = durable or self._synchronous in ("NORMAL", "OFF")
        mode = self._synchronous if keep else "NORMAL"
        if mode != self._mode:  # a pragma only when it changes
            conn.execute(f"PRAGMA synchronous={mode}")
            self._mode = mode

    def _after_commit(self) -> None:
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY:
            self._commits = 0
            # PASSIVE: copies what no reader still needs, never waits for anyone.
            op: Op = lambda tx: tx.rows("PRAGMA wal_checkpoint(PASSIVE)", {})  # noqa: E731
            with contextlib.suppress(exceptions.StoreError):  # closing: the next opener's
                self._enqueue(connection.Job(op, False, concurrent.futures.Future()))

    def _retry(self, fn: Callable[[], T]) -> T:
        return _retry_busy(fn)

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, sqlite3.DatabaseError):
            return exceptions.StoreError(f"database {self.path}: {error}")
        return error

    def _connect(self) -> sqlite3.Connection:
        migrations.check_file(self.path)
        try:
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
        except sqlite3.DatabaseError as error:
            raise exceptions.StoreError(f"cannot open the database {self.path}: {error}") from None
        try:
            _retry_busy(lambda: migrations.check_schema(conn, self.path))
            _retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchall())
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see CHECKPOINT_EVERY
            self._mode = self._synchronous
            conn.execute("PRAGMA foreign_keys=OFF")
            migrations.apply(conn, lambda: _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE")))
        except sqlite3.DatabaseError as error:
            conn.close()
            raise exceptions.StoreError(
                f"cannot use the database {self.path}: {error}; nothing was changed"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    # --- lifecycle --------------------------------------------------------------------

    async def migrate(self) -> int:
        return int(await self._read_op(lambda tx: migrations.current_version(tx.rows)))

    async def now(self) -> float:
        return time.time()  # an embedded database's clock is this machine's clock

    # --- client ----------------------------------------------------------------------

    # --- workers ---------------------------------------------------------------------

    def _lock_path(self, worker_id: str) -> Path:
        return self.path.with_name(self.path.name + "-workers") / f"{worker_id}.lock"

    async def register_worker(self, worker: base.WorkerInfo) -> None:
        # The lock is taken before the worker is visible, so nobody sees it unlocked.
        self._unlock(worker.id)  # a registration tried before and failed half-way
        path = self._lock_path(worker.id)
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._locks[worker.id] = fd
        params = {**worker.__dict__, "now": time.time()}
        await self._write_op(lambda tx: tx.run(sql.INSERT_WORKER, params))
        self.wakeup.listen(worker.id)

    async def stop_worker(self, worker_id: str) -> None:
        await self._write_op(lambda tx: tx.run(sql.STOP_WORKER, {"id": worker_id}))
        self._unlock(worker_id)
        self.notify()  # its released runs are claimable now

    def _unlock(self, worker_id: str) -> None:
        fd = self._locks.pop(worker_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                self._lock_path(worker_id).unlink()
            os.close(fd)

    def heartbeat(self, worker_id: str) -> bool:
        op: Op = lambda tx: tx.run(sql.HEARTBEAT, {"id": worker_id})  # noqa: E731
        return bool(self._submit(op, True).result())

    def _lock_held(self, tx: ops.Tx, worker_id: str) -> bool:
        """Whether the worker's process still holds its lock (it dies with the process)."""
        try:
            fd = os.open(self._lock_path(worker_id), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            self._lock_path(worker_id).unlink()
        return False
