"""One connection owned by one thread, for stores whose driver blocks.

Operations queue up for that thread, and each batch of writes that accumulated while the
previous one committed runs in one transaction: group commit, so many concurrent runs share
one fsync while each write is still durable before its caller goes on. The operations run
together first; if one fails, the batch runs again with each in a savepoint of its own, so
that a failure is its own. Where a backend allows it (`inline_writes`), a lone write with
nothing to share a commit with is made at once on the caller's thread instead. A backend
supplies the connection, how a write transaction begins, and how busy and errors look.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from perdure import exceptions
from perdure.store import ops

T = TypeVar("T")
Op = Callable[[ops.Tx], Any]


WORK, CANCEL = "work", "cancel"  # what a wake-up tells the workers


@dataclass
class Job:
    op: Op
    write: bool
    future: concurrent.futures.Future[Any]
    # Wake the workers when it commits: WORK (claimable work may have appeared), or CANCEL
    # (a run's cancellation was asked for too: its worker must look), or nothing.
    notify: str | None = None
    # Whether its commit must survive a power loss or a database crash before the caller
    # goes on. A claim need not: lost, it leaves the run claimable again, and its worker's
    # first checkpoint is refused by the fence.
    durable: bool = True


class ConnectionThread:
    """Operations on one connection, made by its own thread (or at once, see `_inline`)."""

    label = "store"
    # Whether a caller may make a write on its own thread when the connection is idle
    # (`_inline`): only where no statement can wait on another's lock once the
    # transaction has begun, since the caller's thread is the event loop's.
    _inline_writes = False

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._backoff, self._retry_at = 0.05, 0.0
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

    def _before_commit(self, conn: Any, wake: str | None) -> None:
        """Last statements of a write batch: where the backend notifies in the batch's
        own transaction, the wake-up its jobs asked for (`Job.notify`), if any."""

    def _committed(self, wake: str | None) -> None:
        """Once a write batch committed, before its callers hear back: where the backend
        notifies outside the transaction, the wake-up its jobs asked for, if any."""

    def _end(self, conn: Any) -> None:
        """COMMIT, returning once the transaction is committed."""
        conn.execute("COMMIT")

    def _not_committed(self, conn: Any, error: BaseException) -> bool:
        """Whether a COMMIT that raised `error` surely took no effect (the server refused
        the transaction, rather than the connection failing midway)."""
        return False

    def _after_commit(self) -> None:
        """After each committed write transaction, on whichever thread made it."""

    def _closed(self) -> None:
        """Release what the backend holds besides the connection."""

    def _broken(self, conn: Any) -> bool:
        """Whether the connection is lost (a server restart, say) and must be replaced."""
        return False

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
                batch = self._drain(job, 512)
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

    def _drain(self, job: Job, limit: int | None = None) -> list[Job]:
        """`job` and those queued behind it (at most `limit` in all), leaving the queue's
        end mark (None) in place for the thread's loop."""
        batch = [job]
        while limit is None or len(batch) < limit:
            try:
                nxt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._jobs.put(None)
                break
            batch.append(nxt)
        return batch

    def _fail_unavailable(self, job: Job) -> None:
        batch = self._drain(job)
        for queued in batch:
            queued.future.set_exception(
                exceptions.StoreError(f"the {self.label} database is unreachable; retrying")
            )
        self._done_with(len(batch))

    def _done_with(self, jobs: int) -> None:
        with self._counts:
            self._handed -= jobs

    def _run(self, conn: Any, batch: list[Job]) -> None:
        for job in batch:
            if not job.write:
                self._read(conn, job)
        writes = [job for job in batch if job.write]
        if writes:
            self._write(conn, writes)

    def _read(self, conn: Any, job: Job) -> None:
        try:
            result = self._retry(lambda: job.op(self._tx(conn)))
        except BaseException as error:
            job.future.set_exception(self._translate(error))
        else:
            job.future.set_result(result)

    def _write(self, conn: Any, jobs: list[Job]) -> None:
        """Commit a batch of writes as one transaction. First all together, the fast way;
        if one of them fails, the whole is rolled back and run again with each operation
        in a savepoint of its own, so its failure leaves the others' writes."""
        if len(jobs) > 1 and self._commit(conn, jobs, isolate=False):
            return
        self._commit(conn, jobs, isolate=len(jobs) > 1, final=True)

    def _commit(
        self, conn: Any, jobs: list[Job], isolate: bool, final: bool = False, begun: bool = False
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
                    outcomes.append((True, ops.completed(job.op(tx))))
                    conn.execute("RELEASE SAVEPOINT op")
                except Exception as error:
                    conn.execute("ROLLBACK TO SAVEPOINT op")
                    conn.execute("RELEASE SAVEPOINT op")
                    outcomes.append((False, self._translate(error)))
            if not isolate:  # the rest of each operation, now the batch was sent
                outcomes = [(ok, ops.completed(value)) for ok, value in outcomes]
            tx.flush()
            wake = _wake(jobs, outcomes)
            self._before_commit(conn, wake)
            committing = True
            self._end(conn)
        except BaseException as error:
            # An operation failed: run them again, isolated. A failed COMMIT is never run
            # again here unless it surely took no effect: its callers learn of it.
            retry = not committing or self._not_committed(conn, error)
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            if not final and retry and isinstance(error, Exception):
                return False
            failure = self._translate(error)
            for job in jobs:
                job.future.set_exception(failure)
            return True
        self._after_commit()
        self._committed(wake)
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            if ok and isinstance(value, ops.Quiet):
                value = value.value
            if ok and isinstance(value, ops.Later):
                try:
                    ok, value = True, value.resolve()
                except Exception as error:  # every caller of the batch still hears back
                    ok, value = False, self._translate(error)
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
        return True

    def _submit(self, op: Op, write: bool) -> concurrent.futures.Future[Any]:
        """Hand an operation to the thread (from any thread); its future."""
        job = Job(op, write, concurrent.futures.Future())
        self._enqueue(job)
        return job.future

    def _enqueue(self, job: Job) -> None:
        if self._thread is None:
            raise exceptions.StoreError("the store is not open (or was closed)")
        with self._counts:
            self._handed += 1
        self._jobs.put(job)

    async def _read_op(self, op: Op) -> Any:
        return await _outcome(self._submit(op, False))

    async def _write_op(self, op: Op, notify: str | None = None, durable: bool = True) -> Any:
        job = Job(op, True, concurrent.futures.Future(), notify, durable)
        if not self._inline_writes:
            self._enqueue(job)
            return await _outcome(job.future)
        # What is ready to run goes first: it may write too, and then the writes share a
        # commit on the thread. A write handed over is made even if its caller is canceled.
        # With no other write under way and nothing else ready (a lone run's step), the
        # turn would gather nothing.
        if self._handed or self._deciding or _others_ready():
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

    def _inline(self, job: Job) -> bool:
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


def _others_ready() -> bool:
    """Whether the event loop has anything else to run before waiting for I/O: if not
    (a lone run's step, say), letting it run first only costs a turn of the loop, about a
    tenth of a step's own work. A loop that does not tell (not asyncio's own) is assumed
    to have."""
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is None or len(ready) > 0


def _wake(jobs: list[Job], outcomes: list[tuple[bool, Any]]) -> str | None:
    """The wake-up a batch's jobs ask for: CANCEL over WORK; none for a job that failed or
    whose outcome says it made nothing claimable (`ops.Quiet`)."""
    kinds = {
        job.notify
        for job, (ok, value) in zip(jobs, outcomes, strict=True)
        if job.notify and ok and not isinstance(value, ops.Quiet)
    }
    return CANCEL if CANCEL in kinds else (WORK if kinds else None)


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
