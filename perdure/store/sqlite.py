"""The SQLite store: the embedded default. WAL, one writer, synchronous=FULL by default.

One thread owns the connection. Operations queue up for it, and each batch of writes that
accumulated while the previous one committed runs in one transaction (each operation in a
savepoint of its own): group commit, so many concurrent runs share one fsync while each
checkpoint is still durable before its caller goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from perdure import exceptions, runs
from perdure.store import base, migrations, ops, sql, waits, wakeup
from perdure.store import children as child_ops

T = TypeVar("T")
Op = Callable[[ops.Tx], Any]
BUSY_TIMEOUT = 60.0  # seconds a write waits for another process's transaction
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

    def rows(self, query: str, params: Mapping[str, Any]) -> Sequence[ops.Row]:
        found: Sequence[ops.Row] = self.conn.execute(query, params).fetchall()
        return found

    def run(self, query: str, params: Mapping[str, Any]) -> int:
        return self.conn.execute(query, params).rowcount


@dataclass
class _Job:
    op: Op
    write: bool
    future: concurrent.futures.Future[Any]


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


class SqliteStore:
    """The Store on one SQLite file, shared by any number of processes on one machine."""

    def __init__(self, url: str, *, synchronous: str = "full") -> None:
        self.path = path_from_url(url)
        mode = SYNCHRONOUS.get(synchronous.lower())
        if mode is None:
            raise exceptions.ConfigurationError(
                f"sqlite_synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}"
            )
        self._synchronous = mode
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._locks: dict[str, int] = {}
        self.wakeup = wakeup.Wakeup(self.path)

    # --- the connection thread --------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name=f"perdure-sqlite:{self.path.name}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._thread = None
            raise

    def open_sync(self) -> None:
        """For threads without an event loop (the CLI's checks)."""
        asyncio.run(self.open())

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        for worker_id in list(self._locks):
            self._unlock(worker_id)
        self.wakeup.close()

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as error:
            ready.set_exception(error)
            return
        ready.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                batch = [job]
                while len(batch) < 512:
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._jobs.put(None)
                        break
                    batch.append(nxt)
                self._run(conn, batch)
        finally:
            conn.close()

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

    def _run(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        for job in batch:
            if not job.write:
                self._read(conn, job)
        writes = [job for job in batch if job.write]
        if writes:
            self._write(conn, writes)

    def _read(self, conn: sqlite3.Connection, job: _Job) -> None:
        try:
            result = _retry_busy(lambda: job.op(_Tx(conn)))
        except BaseException as error:
            job.future.set_exception(_translate(error, self.path))
        else:
            job.future.set_result(result)

    def _write(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            tx = _Tx(conn)
            for job in jobs:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, job.op(tx)))
                    conn.execute("RELEASE op")
                except Exception as error:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((False, _translate(error, self.path)))
            conn.execute("COMMIT")
        except BaseException as error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = _translate(error, self.path)
            for job in jobs:
                job.future.set_exception(failure)
            return
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _submit(self, op: Op, write: bool) -> concurrent.futures.Future[Any]:
        if self._thread is None:
            raise exceptions.StoreError("the store is not open (or was closed)")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put(_Job(op, write, future))
        return future

    async def _read_op(self, op: Op) -> Any:
        return await _outcome(self._submit(op, False))

    async def _write_op(self, op: Op) -> Any:
        return await _outcome(self._submit(op, True))

    # --- lifecycle --------------------------------------------------------------------

    async def migrate(self) -> int:
        return int(await self._read_op(lambda tx: migrations.current_version(tx.rows)))

    async def now(self) -> float:
        return time.time()  # an embedded database's clock is this machine's clock

    # --- client ----------------------------------------------------------------------

    async def create_run(self, new: base.NewRun) -> tuple[str, bool]:
        result: tuple[str, bool] = await self._write_op(lambda tx: ops.create_run(tx, new))
        if not result[1]:
            self.wakeup.notify()
        return result

    async def get_run(self, run_id: str) -> runs.Run | None:
        found: runs.Run | None = await self._read_op(lambda tx: ops.get_run(tx, run_id))
        return found

    async def list_runs(self, filter: base.RunFilter) -> list[runs.Run]:
        result: list[runs.Run] = await self._read_op(lambda tx: _list_runs(tx, filter))
        return result

    async def journal(self, run_id: str) -> list[runs.Entry]:
        result: list[runs.Entry] = await self._read_op(lambda tx: ops.journal(tx, run_id))
        return result

    async def entry(self, run_id: str, key: runs.Key) -> runs.Entry | None:
        params = {"run_id": run_id, "branch": key.branch, "seq": key.seq}
        rows = await self._read_op(lambda tx: tx.rows(sql.GET_ENTRY, params))
        return ops.entry_from_row(rows[0]) if rows else None

    async def logs(self, run_id: str) -> list[base.LogLine]:
        rows = await self._read_op(lambda tx: tx.rows(sql.LIST_LOGS, {"run_id": run_id}))
        return [base.LogLine(**dict(r)) for r in rows]

    async def events(self, run_id: str) -> list[base.RunEvent]:
        rows = await self._read_op(lambda tx: tx.rows(sql.LIST_EVENTS, {"run_id": run_id}))
        return [base.RunEvent(**dict(r)) for r in rows]

    async def cancel_run(self, run_id: str) -> runs.Run:
        run: runs.Run = await self._write_op(lambda tx: ops.cancel_run(tx, run_id))
        self.wakeup.notify()
        return run

    async def retry_run(self, run_id: str, key_ttl: float = 30 * 86400) -> runs.Run:
        run: runs.Run = await self._write_op(lambda tx: ops.retry_run(tx, run_id, key_ttl))
        self.wakeup.notify()
        return run

    async def replay_run(
        self, run_id: str, new_id: str, payload: str | None, before: runs.Key | None
    ) -> str:
        result: str = await self._write_op(
            lambda tx: ops.replay_run(tx, run_id, new_id, payload, before)
        )
        self.wakeup.notify()
        return result

    # --- workers ---------------------------------------------------------------------

    def _lock_path(self, worker_id: str) -> Path:
        return self.path.with_name(self.path.name + "-workers") / f"{worker_id}.lock"

    async def register_worker(self, worker: base.WorkerInfo) -> None:
        # The lock is taken before the worker is visible, so nobody sees it unlocked.
        path = self._lock_path(worker.id)
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._locks[worker.id] = fd
        params = {**worker.__dict__, "now": time.time()}
        await self._write_op(lambda tx: tx.run(sql.INSERT_WORKER, params))
        self.wakeup.listen(worker.id)

    async def stop_worker(self, worker_id: str) -> None:
        await self._write_op(lambda tx: tx.run(sql.STOP_WORKER, {"id": worker_id, "now": tx.now}))
        self._unlock(worker_id)
        self.wakeup.notify()  # its released runs are claimable now

    def _unlock(self, worker_id: str) -> None:
        fd = self._locks.pop(worker_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                self._lock_path(worker_id).unlink()
            os.close(fd)

    def heartbeat(self, worker_id: str) -> bool:
        op: Op = lambda tx: tx.run(sql.HEARTBEAT, {"id": worker_id, "now": tx.now})  # noqa: E731
        return bool(self._submit(op, True).result())

    async def reap_workers(self, lease_seconds: float) -> list[str]:
        dead: list[str] = await self._write_op(lambda tx: self._reap(tx, lease_seconds))
        if dead:
            self.wakeup.notify()
        return dead

    def _reap(self, tx: ops.Tx, lease_seconds: float) -> list[str]:
        dead = []
        for row in tx.rows(sql.LIVE_WORKERS, {}):
            if row["id"] in self._locks:
                continue
            silent = tx.now - row["heartbeat_at"] > lease_seconds
            if silent or not self._lock_held(row["id"]):
                tx.run(sql.MARK_DEAD, {"id": row["id"], "now": tx.now})
                dead.append(row["id"])
        return dead

    def _lock_held(self, worker_id: str) -> bool:
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

    async def set_queue_limits(self, limits: dict[str, int | None]) -> None:
        def op(tx: ops.Tx) -> None:
            for name, limit in limits.items():
                tx.run(sql.UPSERT_QUEUE, {"name": name, "limit": limit})

        await self._write_op(op)

    async def claim(
        self,
        worker_id: str,
        task_ids: list[str],
        version: str | None,
        limit: int,
        max_recoveries: int,
    ) -> list[base.Claim]:
        token = lambda: secrets.token_hex(12)  # noqa: E731
        claims: list[base.Claim] = await self._write_op(
            lambda tx: ops.claim(tx, worker_id, task_ids, version, limit, max_recoveries, token)
        )
        return claims

    async def next_due(self, task_ids: list[str]) -> float | None:
        """When the earliest not-yet-due run of these tasks becomes due."""
        import json

        params = {"task_ids": json.dumps(task_ids)}
        rows = await self._read_op(lambda tx: tx.rows(sql.NEXT_DUE, {**params, "now": tx.now}))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    async def waiting_tasks(self) -> dict[str, int]:
        rows = await self._read_op(lambda tx: tx.rows(sql.WAITING_TASKS, {}))
        return {r["task_id"]: r["n"] for r in rows}

    async def cancel_requests(self, worker_id: str) -> list[str]:
        rows = await self._read_op(
            lambda tx: tx.rows(sql.CANCEL_REQUESTS, {"worker_id": worker_id})
        )
        return [r["id"] for r in rows]

    # --- a leased run ----------------------------------------------------------------

    async def checkpoint(
        self, lease: base.Lease, entries: list[runs.Entry], progress: base.Progress | None = None
    ) -> bool:
        return bool(await self._write_op(lambda tx: ops.checkpoint(tx, lease, entries, progress)))

    async def suspend(
        self,
        lease: base.Lease,
        due_at: float,
        executed_seconds: float,
        progress: base.Progress | None,
        waits: list[runs.Key] | None = None,
    ) -> bool:
        return bool(
            await self._write_op(
                lambda tx: ops.suspend(tx, lease, due_at, executed_seconds, progress, waits)
            )
        )

    async def settled_waits(self, waits: list[tuple[str, runs.Key]]) -> list[tuple[str, runs.Key]]:
        found: list[tuple[str, runs.Key]] = await self._read_op(
            lambda tx: ops.settled_waits(tx, waits)
        )
        return found

    # --- child runs ------------------------------------------------------------------

    async def create_children(
        self, lease: base.Lease, entry: runs.Entry, children: list[base.NewRun]
    ) -> bool:
        done = bool(
            await self._write_op(lambda tx: child_ops.create_children(tx, lease, entry, children))
        )
        self.wakeup.notify()
        return done

    # --- tokens ----------------------------------------------------------------------

    async def create_token(
        self,
        lease: base.Lease,
        entry: runs.Entry,
        token_id: str,
        timeout_at: float | None,
        tags: list[str],
        key: str | None,
    ) -> str | None:
        found: str | None = await self._write_op(
            lambda tx: waits.create_token(tx, lease, entry, token_id, timeout_at, tags, key)
        )
        return found

    async def wait_token(self, lease: base.Lease, entry: runs.Entry) -> waits.WaitState | None:
        state: waits.WaitState | None = await self._write_op(
            lambda tx: waits.wait_token(tx, lease, entry)
        )
        return state

    async def complete_token(self, token_id: str, data: str) -> list[str]:
        woken: list[str] = await self._write_op(lambda tx: waits.complete_token(tx, token_id, data))
        self.wakeup.notify()
        return woken

    async def get_token(self, token_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._read_op(lambda tx: waits.get_token(tx, token_id))
        return found

    async def list_tokens(
        self, status: str | None, run_id: str | None, tag: str | None, limit: int
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._read_op(
            lambda tx: waits.list_tokens(tx, status, run_id, tag, limit)
        )
        return found

    async def secret(self, generated: str) -> str:
        value: str = await self._write_op(lambda tx: waits.secret(tx, generated))
        return value

    async def release(
        self, lease: base.Lease, executed_seconds: float, progress: base.Progress | None
    ) -> bool:
        done = bool(
            await self._write_op(lambda tx: ops.release(tx, lease, executed_seconds, progress))
        )
        self.wakeup.notify()
        return done

    async def retry_later(
        self,
        lease: base.Lease,
        error: runs.RunError,
        delay: float,
        drop: list[runs.Key],
        progress: base.Progress | None,
    ) -> bool:
        return bool(
            await self._write_op(
                lambda tx: ops.retry_later(tx, lease, error, delay, drop, progress)
            )
        )

    async def finish(
        self,
        lease: base.Lease,
        status: runs.RunStatus,
        output: str | None,
        error: runs.RunError | None,
        drop: list[runs.Key],
        progress: base.Progress | None,
    ) -> bool:
        done = bool(
            await self._write_op(
                lambda tx: ops.finish(tx, lease, status, output, error, drop, progress)
            )
        )
        self.wakeup.notify()  # a queue slot is free, and a waiting client may look
        return done


def _outcome(job: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
    """An awaitable for a job's outcome. One way only: canceling the awaiter never cancels
    the job, so a write handed to the store is made even if its caller stops waiting."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def copy(done: concurrent.futures.Future[Any]) -> None:
        if waiter.done():
            return
        error = done.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    job.add_done_callback(lambda done: loop.call_soon_threadsafe(copy, done))
    return waiter


def _list_runs(tx: ops.Tx, f: base.RunFilter) -> list[runs.Run]:
    import json

    params = {
        "statuses": None if f.status is None else json.dumps(f.status),
        "task_id": f.task_id,
        "tag": f.tag,
        "parent_id": f.parent_id,
        "root_id": f.root_id,
        "created_after": f.created_after,
        "created_before": f.created_before,
        "cursor": f.cursor,
        "limit": f.limit,
    }
    return [ops.run_from_row(r) for r in tx.rows(sql.LIST_RUNS, params)]


def _translate(error: BaseException, path: Path) -> BaseException:
    if isinstance(error, sqlite3.DatabaseError):
        return exceptions.StoreError(f"database {path}: {error}")
    return error
