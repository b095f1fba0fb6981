"""The machinery shared by stores that run their transactions on one thread of their own.

Operations queue up for that thread, and each batch of writes that accumulated while the
previous one committed runs in one transaction, each operation in a savepoint of its own:
group commit, so many concurrent runs share one fsync while each checkpoint is still
durable before its caller goes on. A backend supplies the connection, how a write
transaction begins, how busy and errors look, and liveness and wake-ups.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from perdure import exceptions, runs
from perdure.store import admin, base, claims, ops, waits
from perdure.store import children as child_ops

T = TypeVar("T")
Op = Callable[[ops.Tx], Any]


@dataclass
class _Job:
    op: Op
    write: bool
    future: concurrent.futures.Future[Any]
    notify: bool = False  # claimable work may appear: wake the workers when it commits
    # Whether its commit must survive a power loss or a database crash before the caller
    # goes on. A claim need not: lost, it leaves the run claimable again, and its worker's
    # first checkpoint is refused by the fence.
    durable: bool = True


class BatchedStore:
    """The Store's operations over one connection owned by one thread."""

    label = "store"
    # Whether a caller may make a write on its own thread when the connection is idle
    # (`_inline`): only where no statement can wait on another's lock once the
    # transaction has begun, since the caller's thread is the event loop's.
    _inline_writes = False
    _notifies_in_batch = False  # whether a write batch sends its own wake-up (see _Job)

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._backoff, self._retry_at = 0.05, 0.0
        self._locks: dict[str, Any] = {}  # this process's workers -> their liveness locks
        # The connection, while it is usable, and who uses it: the thread for its batches,
        # or a caller writing at once on its own thread (`_inline`).
        self._conn: Any = None
        self._busy = threading.Lock()
        self._deciding = 0  # writers letting their event loop run before they choose
        self._handed = 0  # jobs handed to the thread and not yet done with
        self._counts = threading.Lock()  # for both: a store may serve several loops

    # --- what a backend supplies -------------------------------------------------------

    def _connect(self) -> Any:
        """Open, check and migrate; the connection the thread will own."""
        raise NotImplementedError

    def _tx(self, conn: Any) -> ops.Tx:
        raise NotImplementedError

    def _begin(self, conn: Any, durable: bool) -> None:
        """Start a write transaction (retrying while another holds the lock); one that
        need not be `durable` may commit without waiting for the disk."""
        raise NotImplementedError

    def _try_begin(self, conn: Any, durable: bool) -> bool:
        """`_begin` without waiting for another process's lock: whether it began."""
        self._begin(conn, durable)
        return True

    def _retry(self, fn: Callable[[], T]) -> T:
        return fn()

    def _translate(self, error: BaseException) -> BaseException:
        return error

    def _before_commit(self, conn: Any, jobs: list[_Job]) -> None:
        """Last statements of a write batch (a notification, say)."""

    def _after_commit(self) -> None:
        """After each committed write transaction, on whichever thread made it."""

    def _closed(self) -> None:
        """Release what the backend holds besides the connection."""

    def _broken(self, conn: Any) -> bool:
        """Whether the connection is lost (a server restart, say) and must be replaced."""
        return False

    def notify(self) -> None:
        """Wake the workers: claimable work may have appeared."""

    def _contended(self) -> None:
        """A claim left runs whose slots another claim held: look again once it commits."""

    def _lock_held(self, tx: ops.Tx, worker_id: str) -> bool:
        """Whether that worker's liveness lock is still held (it dies with its holder)."""
        raise NotImplementedError

    async def reap_workers(self, lease_seconds: float) -> list[str]:
        dead: list[str] = await self._write_op(lambda tx: self._reap(tx, lease_seconds))
        if dead:
            self.notify()
        return dead

    def _reap(self, tx: ops.Tx, lease_seconds: float) -> list[str]:
        dead = []
        for row in tx.rows(tx.q.LIVE_WORKERS, {}):
            if row["id"] in self._locks:
                continue
            silent = tx.now - row["heartbeat_at"] > lease_seconds
            if silent or not self._lock_held(tx, row["id"]):
                tx.run(tx.q.MARK_DEAD, {"id": row["id"], "now": tx.now})
                dead.append(row["id"])
        return dead

    # --- the connection thread --------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name=f"perdure-{self.label}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._thread = None
            raise

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._closed()

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as error:
            ready.set_exception(error)
            return
        self._conn = conn
        ready.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                if conn is not None and self._broken(conn):
                    with self._busy:
                        self._conn = conn = self._reconnect(conn)
                if conn is None:
                    self._fail_unavailable(job)
                    with self._busy:
                        self._conn = conn = self._reconnect(None)
                    continue
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
                with self._busy:
                    self._run(conn, batch)
                    self._done_with(len(batch))
        finally:
            with self._busy, contextlib.suppress(Exception):
                self._conn = None
                conn.close()

    def _reconnect(self, conn: Any) -> Any:
        """Replace a lost connection, at most once per backoff interval; None while the
        database is unreachable (calls then fail at once with a StoreError, and callers
        retry: a worker hands its runs back, its heartbeat and claims try again)."""
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        now = time.monotonic()
        if now < self._retry_at:
            return None
        try:
            fresh = self._connect()
        except Exception:
            self._backoff = min(self._backoff * 2, 2.0)
            self._retry_at = now + self._backoff
            return None
        self._backoff, self._retry_at = 0.05, 0.0
        return fresh

    def _fail_unavailable(self, job: _Job) -> None:
        batch = [job]
        while True:
            try:
                nxt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._jobs.put(None)
                break
            batch.append(nxt)
        for queued in batch:
            queued.future.set_exception(
                exceptions.StoreError(f"the {self.label} database is unreachable; retrying")
            )
        self._done_with(len(batch))

    def _done_with(self, jobs: int) -> None:
        with self._counts:
            self._handed -= jobs

    def _run(self, conn: Any, batch: list[_Job]) -> None:
        for job in batch:
            if not job.write:
                self._read(conn, job)
        writes = [job for job in batch if job.write]
        if writes:
            self._write(conn, writes)

    def _read(self, conn: Any, job: _Job) -> None:
        try:
            result = self._retry(lambda: job.op(self._tx(conn)))
        except BaseException as error:
            job.future.set_exception(self._translate(error))
        else:
            job.future.set_result(result)

    def _write(self, conn: Any, jobs: list[_Job]) -> None:
        """Commit a batch of writes as one transaction. First all together, the fast way;
        if one of them fails, the whole is rolled back and run again with each operation
        in a savepoint of its own, so its failure leaves the others' writes."""
        if len(jobs) > 1 and self._commit(conn, jobs, isolate=False):
            return
        self._commit(conn, jobs, isolate=len(jobs) > 1, final=True)

    def _commit(
        self, conn: Any, jobs: list[_Job], isolate: bool, final: bool = False, begun: bool = False
    ) -> bool:
        """Run the batch and commit it; whether its outcomes were delivered (always, when
        `final`; otherwise only if every operation succeeded)."""
        outcomes: list[tuple[bool, Any]] = []
        committing = False
        try:
            if not begun:
                self._begin(conn, any(job.durable for job in jobs))
            tx = self._tx(conn)
            for job in jobs:
                if not isolate:
                    outcomes.append((True, job.op(tx)))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, job.op(tx)))
                    conn.execute("RELEASE SAVEPOINT op")
                except Exception as error:
                    conn.execute("ROLLBACK TO SAVEPOINT op")
                    conn.execute("RELEASE SAVEPOINT op")
                    outcomes.append((False, self._translate(error)))
            self._before_commit(conn, jobs)
            committing = True
            conn.execute("COMMIT")
        except BaseException as error:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            # An operation failed: run them again, isolated. A failed COMMIT is never run
            # again here (it may have taken effect): its callers learn of it.
            if not final and not committing and isinstance(error, Exception):
                return False
            failure = self._translate(error)
            for job in jobs:
                job.future.set_exception(failure)
            return True
        self._after_commit()
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
        return True

    def _submit(self, op: Op, write: bool) -> concurrent.futures.Future[Any]:
        """Hand an operation to the thread (from any thread); its future."""
        job = _Job(op, write, concurrent.futures.Future())
        self._enqueue(job)
        return job.future

    def _enqueue(self, job: _Job) -> None:
        if self._thread is None:
            raise exceptions.StoreError("the store is not open (or was closed)")
        with self._counts:
            self._handed += 1
        self._jobs.put(job)

    async def _read_op(self, op: Op) -> Any:
        return await _outcome(self._submit(op, False))

    async def _write_op(self, op: Op, notify: bool = False, durable: bool = True) -> Any:
        job = _Job(op, True, concurrent.futures.Future(), notify, durable)
        if not self._inline_writes:
            self._enqueue(job)
            return await _outcome(job.future)
        # What is ready to run goes first: it may write too, and then the writes share a
        # commit on the thread. A write handed over is made even if its caller is canceled.
        with self._counts:
            self._deciding += 1
        try:
            await asyncio.sleep(0)
        except BaseException:
            with contextlib.suppress(exceptions.StoreError):  # closed: the cancel stands
                self._enqueue(job)
            raise
        finally:
            with self._counts:
                self._deciding -= 1
        if not self._inline(job):
            self._enqueue(job)
            return await _outcome(job.future)
        return job.future.result()

    def _inline(self, job: _Job) -> bool:
        """Make a write at once on the caller's thread, if the connection is idle and no
        other write waits: with nothing to group it with, the two thread hand-offs (~100 µs
        of a ~300 µs checkpoint) would be pure cost. Whether it was made; it never waits
        for another process's lock (the thread does that, off the event loop)."""
        if self._thread is None or not self._busy.acquire(blocking=False):
            return False
        try:
            conn = self._conn
            # Jobs handed over earlier are made first: writes are made in the order given.
            if self._handed or self._deciding or conn is None or self._broken(conn):
                return False
            try:
                if not self._try_begin(conn, job.durable):
                    return False
            except Exception:
                return False  # the thread's path meets it again, and reports it
            self._commit(conn, [job], isolate=False, final=True, begun=True)
        finally:
            self._busy.release()
        return True

    async def _write_and_notify(self, op: Op) -> Any:
        """A write after which claimable work may have appeared: wake the workers (in the
        write's own transaction where the backend can)."""
        result = await self._write_op(op, notify=self._notifies_in_batch)
        if not self._notifies_in_batch:
            self.notify()
        return result

    # --- client ----------------------------------------------------------------------

    async def create_run(self, new: base.NewRun) -> tuple[str, bool]:
        result: tuple[str, bool] = await self._write_and_notify(lambda tx: ops.create_run(tx, new))
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
        rows = await self._read_op(lambda tx: tx.rows(tx.q.GET_ENTRY, params))
        return ops.entry_from_row(rows[0]) if rows else None

    async def logs(self, run_id: str) -> list[base.LogLine]:
        rows = await self._read_op(lambda tx: tx.rows(tx.q.LIST_LOGS, {"run_id": run_id}))
        return [base.LogLine(**dict(r)) for r in rows]

    async def events(self, run_id: str) -> list[base.RunEvent]:
        rows = await self._read_op(lambda tx: tx.rows(tx.q.LIST_EVENTS, {"run_id": run_id}))
        return [base.RunEvent(**dict(r)) for r in rows]

    async def cancel_run(self, run_id: str) -> runs.Run:
        run: runs.Run = await self._write_and_notify(lambda tx: ops.cancel_run(tx, run_id))
        return run

    async def retry_run(self, run_id: str, key_ttl: float = 30 * 86400) -> runs.Run:
        run: runs.Run = await self._write_and_notify(lambda tx: ops.retry_run(tx, run_id, key_ttl))
        return run

    async def replay_run(
        self, run_id: str, new_id: str, payload: str | None, before: runs.Key | None
    ) -> str:
        result: str = await self._write_and_notify(
            lambda tx: ops.replay_run(tx, run_id, new_id, payload, before)
        )
        return result

    # --- claiming and leased runs ---------------------------------------------------

    async def set_queue_limits(self, limits: dict[str, int | None]) -> None:
        def op(tx: ops.Tx) -> None:
            for name, limit in limits.items():
                tx.run(tx.q.UPSERT_QUEUE, {"name": name, "limit": limit})

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
        taken: list[base.Claim]
        op: Op = lambda tx: claims.claim(  # noqa: E731
            tx, worker_id, task_ids, version, limit, max_recoveries, token
        )
        taken, contended = await self._write_op(op, durable=False)
        if contended:
            self._contended()
        return taken

    async def next_due(self, task_ids: list[str]) -> float | None:
        """When the earliest not-yet-due run of these tasks becomes due."""

        params = {"task_ids": json.dumps(task_ids)}
        rows = await self._read_op(lambda tx: tx.rows(tx.q.NEXT_DUE, {**params, "now": tx.now}))
        value = rows[0]["due"] if rows else None
        return None if value is None else float(value)

    async def waiting_tasks(self) -> dict[str, int]:
        rows = await self._read_op(lambda tx: tx.rows(tx.q.WAITING_TASKS, {}))
        return {r["task_id"]: r["n"] for r in rows}

    async def cancel_requests(self, worker_id: str) -> list[str]:
        rows = await self._read_op(
            lambda tx: tx.rows(tx.q.CANCEL_REQUESTS, {"worker_id": worker_id})
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
            await self._write_and_notify(
                lambda tx: child_ops.create_children(tx, lease, entry, children)
            )
        )
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
        woken: list[str] = await self._write_and_notify(
            lambda tx: waits.complete_token(tx, token_id, data)
        )
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
            await self._write_and_notify(
                lambda tx: ops.release(tx, lease, executed_seconds, progress)
            )
        )
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
            await self._write_and_notify(
                lambda tx: ops.finish(tx, lease, status, output, error, drop, progress)
            )
        )
        return done

    # --- server reads

    async def queue_stats(self) -> list[admin.QueueStats]:
        found: list[admin.QueueStats] = await self._read_op(admin.queue_stats)
        return found

    async def list_workers(self, ended_within: float, limit: int) -> list[admin.WorkerStatus]:
        found: list[admin.WorkerStatus] = await self._read_op(
            lambda tx: admin.list_workers(tx, ended_within, limit)
        )
        return found

    async def run_counts(self) -> dict[str, int]:
        found: dict[str, int] = await self._read_op(admin.run_counts)
        return found

    async def step_durations(self) -> admin.StepDurations:
        found: admin.StepDurations = await self._read_op(admin.step_durations)
        return found

    async def trace_fingerprint(self, run_id: str) -> tuple[Any, ...]:
        found: tuple[Any, ...] = await self._read_op(lambda tx: admin.trace_fingerprint(tx, run_id))
        return found

    async def probe_write(self) -> None:
        await self._write_op(admin.probe_write)


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
    return [ops.run_from_row(r) for r in tx.rows(tx.q.LIST_RUNS, params)]
