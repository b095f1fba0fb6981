"""One run in a worker's memory: replay its journal, run what is new, checkpoint, and end.

Durable operations (steps, sleeps, values) come here from `perdure.context` and
`perdure.tasks` with the branch that made them. A run suspends when no branch runs a step
and every live branch is blocked on a durable wait further away than `suspend_after`;
to suspend (or when the lease is lost, or the worker shuts down) the run is frozen first,
so nothing records anything after that decision.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from perdure import (
    exceptions,
    failures,
    journal,
    quiescence,
    runs,
    runtime,
    signals,
    steps,
    telemetry,
    token_waits,
    tokens,
)
from perdure.branches import Branch, Bridge
from perdure.store import base

if TYPE_CHECKING:
    from perdure.tasks import StepSpec, Task
    from perdure.worker import Worker

log = logging.getLogger("perdure.worker")
# Timers are scheduled from an empty context: a canceled timer stays in the loop's heap
# until its deadline, and must not keep a suspended run's branch (and so the run) alive.
_NO_RUN = contextvars.Context()
UNWIND_SECONDS = 2.0  # how long a frozen run's code may take to unwind
FATAL = (exceptions.NonRetryableError, exceptions.PayloadError, exceptions.NonDeterminismError)


class Execution:
    def __init__(self, worker: Worker, task: Task[Any, Any], claim: base.Claim) -> None:
        self.worker = worker
        self.store = worker.store
        self.settings = worker.settings
        self.task = task
        self.claim = claim
        self.lease = claim.lease
        self.run_id = claim.lease.run_id
        self.attempt = claim.attempt
        self.journal = journal.Journal(claim.journal)
        self.clock_offset = claim.db_now - time.time()
        self.loop = asyncio.get_running_loop()
        self.root = Branch(self, "0")
        self.branches: list[Branch] = [self.root]
        self.op_tasks: set[asyncio.Task[Any]] = set()
        self.frozen: signals.Frozen | None = None
        self.ending: tuple[runs.RunStatus, runs.RunError | None] | None = None
        self.cancel_requested = False
        # Claimed with a cancellation pending (it was waiting, or its worker died): the
        # code gets CancelledError where it left off, once replay reaches that point.
        self._cancel_at_frontier = claim.cancel_requested
        self.body_done = False
        self.pending_values: list[runs.Entry] = []
        self.logs: list[base.LogLine] = []
        self.metadata: dict[str, Any] = {}
        self.metadata_patch: dict[str, Any] = {}
        self.failures: list[tuple[BaseException, runs.Key]] = []
        self.steps_in_flight = 0
        self.waiting = 0  # branches in a durable wait (`wait_until`)
        self.draining = False
        self._check_handle: asyncio.Handle | None = None
        self._executed = claim.executed_seconds
        self._busy_since: float | None = time.monotonic()
        self._timers: list[asyncio.TimerHandle] = []
        self._frozen_signal: asyncio.Future[None] = self.loop.create_future()

    # --- clocks ------------------------------------------------------------------------

    def db_now(self) -> float:
        return time.time() + self.clock_offset

    def executed_seconds(self) -> float:
        running = 0.0 if self._busy_since is None else time.monotonic() - self._busy_since
        return self._executed + running

    def _pause_clock(self) -> None:
        if self._busy_since is not None:
            self._executed += time.monotonic() - self._busy_since
            self._busy_since = None

    def _resume_clock(self) -> None:
        if self._busy_since is None:
            self._busy_since = time.monotonic()

    # --- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        """Execute the run until it ends, suspends, is released or is lost."""
        self._arm_max_duration()
        try:
            try:
                body = self._start_body()
            except exceptions.PayloadError as error:  # the stored payload no longer fits
                await self._finish(runs.RunStatus.FAILED, None, _run_error(error))
                return
            await asyncio.wait([body, self._frozen_signal], return_when=asyncio.FIRST_COMPLETED)
            if not body.done():
                # Frozen: a moment to unwind; code swallowing the cancellation is abandoned.
                await asyncio.wait([body], timeout=UNWIND_SECONDS)
                if not body.done():
                    log.warning("run %s ignores cancellation; abandoning it", self.run_id)
            self.body_done = True
            frozen = self.frozen
            if frozen is None:
                # Done: revoke the fence and stop leftover branches (no step after the end).
                self.frozen = signals.Ended()
                self._cancel_tasks()
            await self._conclude(body, frozen)
        finally:
            for timer in self._timers:
                timer.cancel()
            self.body_done = True

    def unlink(self) -> None:
        """The run ended here: drop the links to its branches and theirs to their finished
        tasks, which made each run a reference cycle left to the cyclic collector. Then
        reference counting frees the run as the worker lets go of it; a branch that ignored
        its cancellation still reaches the execution, whose fence refuses what it tries."""
        for branch in self.branches:
            if branch.task is not None and branch.task.done():
                branch.task = None
        self.branches = []
        self.op_tasks = set()
        del self.root  # read only to start the body

    def _start_body(self) -> asyncio.Future[Any]:
        payload = self.task.payload_codec.load(self.claim.payload)
        ctx = contextvars.Context()
        ctx.run(runtime.current.set, self.root)
        if self.task.is_async:
            body = asyncio.Task(self.task.invoke(payload), loop=self.loop, context=ctx)
            self.root.task = body
            body.add_done_callback(self.branch_done)
            return body
        self.root.bridge = Bridge(self, self.loop)
        return self.loop.run_in_executor(self.worker.body_pool, ctx.run, self._sync_body, payload)

    def _sync_body(self, payload: Any) -> Any:
        self.root.thread_ident = threading.get_ident()
        try:
            return self.task.invoke(payload)
        finally:
            self.loop.call_soon_threadsafe(self.branch_done, None)

    async def _conclude(self, body: asyncio.Future[Any], frozen: signals.Frozen | None) -> None:
        if body.done() and not body.cancelled():
            body.exception()  # retrieved: a frozen body's signal is expected, not news
        if isinstance(frozen, signals.Suspended | signals.LeaseLost):
            return
        if isinstance(frozen, signals.StoreLost):
            await self.worker.hand_back(self)
            return
        if isinstance(frozen, signals.ShuttingDown):
            await self.store.release(self.lease, self.executed_seconds(), self._take_progress())
            return
        if self.ending is not None:
            status, error = self.ending
            await self._finish(status, None, error)
            return
        if self.cancel_requested:
            await self._finish(runs.RunStatus.CANCELED, None, None)
            return
        if body.cancelled():
            escaped: BaseException = asyncio.CancelledError("the task body was canceled")
        elif (failure := body.exception()) is not None:
            escaped = failure
        else:
            await self._complete(body.result())
            return
        await self._fail(escaped)

    async def _complete(self, result: Any) -> None:
        try:
            output = self.task.output_codec.dump(result)
        except exceptions.PayloadError as error:
            await self._finish(runs.RunStatus.FAILED, None, _run_error(error))
            return
        await self._finish(runs.RunStatus.COMPLETED, output, None)

    async def _fail(self, error: BaseException) -> None:
        drop = self._escaped_failures(error)
        fatal = isinstance(error, FATAL) or not isinstance(error, Exception)
        retry_after = exceptions.retry_after_of(error)
        delay = None if fatal else self.task.retry.delay(self.attempt, retry_after=retry_after)
        if delay is None:
            await self._finish(runs.RunStatus.FAILED, None, _run_error(error), drop)
            return
        await self.flush_values()
        await self.store.retry_later(
            self.lease, _run_error(error), delay, drop, self._take_progress()
        )

    async def _finish(
        self,
        status: runs.RunStatus,
        output: str | None,
        error: runs.RunError | None,
        drop: list[runs.Key] | None = None,
    ) -> None:
        ended = await self.store.finish(
            self.lease, status, output, error, drop or [], self._take_progress()
        )
        if ended and telemetry.enabled():
            run = await self.store.get_run(self.run_id)
            if run is not None:
                telemetry.run_ended(run)

    def _escaped_failures(self, error: BaseException) -> list[runs.Key]:
        """Step failures carried by the error that escaped the body: those steps run again
        at the next attempt. Failures the code caught stay recorded and replay."""
        seen: set[int] = set()
        stack = [error]
        while stack:
            exc = stack.pop()
            if id(exc) in seen:
                continue
            seen.add(id(exc))
            stack += [e for e in (exc.__cause__, exc.__context__) if e is not None]
            if isinstance(exc, BaseExceptionGroup):
                stack += list(exc.exceptions)
        return [key for exc, key in self.failures if id(exc) in seen]

    # --- freezing, cancellation, time limits -----------------------------------------------

    def freeze(self, signal: signals.Frozen) -> None:
        """Revoke the in-memory fence, then stop every task of the run."""
        if self.frozen is not None:
            return
        self.frozen = signal
        self._frozen_signal.set_result(None)
        self._cancel_tasks()

    def _cancel_tasks(self, skip: asyncio.Task[Any] | None = None) -> None:
        for branch in self.branches:
            if branch.task is not None and not branch.task.done() and branch.task is not skip:
                branch.task.cancel()
        for task in list(self.op_tasks):
            if task is not skip:
                task.cancel()

    def frontier(self, branch: Branch) -> None:
        """Called where a branch goes past its journal (a live operation, or a wait that
        blocks): a cancellation the run was claimed with is delivered here."""
        if self._cancel_at_frontier:
            self._cancel_at_frontier = False
            self.request_cancel()
            branch.cancel_delivered = True
            raise asyncio.CancelledError("the run was canceled")

    def check_frozen(self) -> None:
        if self.frozen is not None:
            raise self.frozen

    def request_cancel(self) -> None:
        """Raise CancelledError in every branch; code may catch it to clean up within
        `cancel_grace_seconds`, then the run ends canceled."""
        if self.cancel_requested or self.frozen is not None:
            return
        self.cancel_requested = True
        self._cancel_tasks(skip=_current_task())
        grace = self.settings.cancel_grace_seconds
        self._timers.append(
            self.loop.call_later(grace, self._end, runs.RunStatus.CANCELED, None, context=_NO_RUN)
        )

    def shut_down(self) -> None:
        """Worker shutdown: steps in flight finish and are recorded; no new durable
        operation starts; then the run is released."""
        self.draining = True
        if self.steps_in_flight == 0:
            self.freeze(signals.ShuttingDown())

    def _end(self, status: runs.RunStatus, error: runs.RunError | None) -> None:
        if self.frozen is None and not self.body_done:
            self.ending = (status, error)
            self.freeze(signals.Ended())

    def _arm_max_duration(self) -> None:
        limit = self.task.max_duration
        if limit is None:
            return
        remaining = limit - self.executed_seconds()
        self._timers.append(
            self.loop.call_later(max(remaining, 0), self._check_duration, context=_NO_RUN)
        )

    def _check_duration(self) -> None:
        limit = self.task.max_duration
        assert limit is not None
        remaining = limit - self.executed_seconds()
        if remaining > 0:
            self._timers.append(
                self.loop.call_later(remaining, self._check_duration, context=_NO_RUN)
            )
            return
        error = runs.RunError(
            type="timed_out",
            message=f"max duration exceeded: the attempt executed for more than {limit}s "
            "(time spent in durable waits does not count)",
        )
        self._end(runs.RunStatus.TIMED_OUT, error)

    # --- suspension ------------------------------------------------------------------------

    def branch_done(self, task: Any = None) -> None:
        if isinstance(task, asyncio.Task) and not task.cancelled():
            task.exception()  # retrieved: a frozen branch's signal is expected, not news
        self.schedule_check()

    def operation_ended(self) -> None:
        """A step or operation ended: if a branch waits, its branch may now only await it."""
        if self.waiting:
            self.schedule_check()

    def schedule_check(self) -> None:
        if self._check_handle is None:
            self._check_handle = self.loop.call_soon(self._check, context=_NO_RUN)

    def _check(self) -> None:
        self._check_handle = None
        if self.frozen is not None or self.body_done:
            return
        deadline = quiescence.deadline(self)
        if deadline is None:
            return
        self._pause_clock()
        if deadline - self.db_now() > self.settings.suspend_after:
            self.worker.spawn(self._suspend(deadline))

    async def _suspend(self, deadline: float) -> None:
        if self.frozen is not None or self.body_done:
            return
        found = quiescence.deadline(self)  # the run may have moved on since the check
        if found is None or found - self.db_now() <= self.settings.suspend_after:
            return
        self.freeze(signals.Suspended())
        waits = [b.wait_key for b in self.branches if b.live and b.wait_key]
        try:
            await self.flush_values()
            ok = await self.store.suspend(
                self.lease, found, self.executed_seconds(), self._take_progress(), waits
            )
        except Exception:
            log.exception("run %s: could not record its suspension", self.run_id)
            await self.worker.hand_back(self)
            return
        if not ok:
            log.warning("run %s: lease lost before suspension", self.run_id)

    # --- durable operations ----------------------------------------------------------------

    def match(self, key: runs.Key, kind: runs.EntryKind, name: str) -> runs.Entry | None:
        try:
            return self.journal.match(key, kind, name)
        except exceptions.NonDeterminismError as error:
            self.ending = (runs.RunStatus.FAILED, _run_error(error))
            self.freeze(signals.Ended())
            raise

    def entry_checks(self) -> bool:
        """Whether `enter` has anything to do (a step replayed from a long journal skips
        awaiting it when not)."""
        return self.draining or self.frozen is not None or self.cancel_requested

    async def enter(self, branch: Branch) -> None:
        """Checks at the start of every durable operation. While the worker shuts down, a
        new operation waits for the steps in flight to be recorded, then the run freezes."""
        while self.draining and self.frozen is None and self.steps_in_flight > 0:
            try:
                await asyncio.shield(self._frozen_signal)
            except asyncio.CancelledError:
                if self.frozen is None:
                    raise
        if self.draining and self.frozen is None:
            self.freeze(signals.ShuttingDown())
        self.check_frozen()
        if (
            self.cancel_requested
            and branch.thread_ident is not None
            and not branch.cancel_delivered
        ):
            branch.cancel_delivered = True
            raise asyncio.CancelledError("the run was canceled")

    async def record(self, *entries: runs.Entry) -> None:
        """Make entries durable (with pending values, logs and metadata), fenced by the
        lease: a run whose lease was taken over records nothing."""
        self.check_frozen()
        batch = [*self.pending_values, *entries]
        self.pending_values = []
        try:
            held = await self.store.checkpoint(self.lease, batch, self._take_progress())
        except exceptions.StoreError:
            # Not recorded, so the code must not go on as if it were: stop, hand back.
            log.exception("run %s: a checkpoint failed", self.run_id)
            lost = signals.StoreLost()
            self.freeze(lost)
            raise lost from None
        if not held:
            self.freeze(signals.LeaseLost())
            self.check_frozen()
        for entry in entries:
            self.journal.put(entry)

    async def flush_values(self) -> None:
        if self.pending_values:
            batch, self.pending_values = self.pending_values, []
            await self.store.checkpoint(self.lease, batch, None)

    async def wait_until(
        self, branch: Branch, deadline: float | None, settles: runs.Key | None = None
    ) -> None:
        """A durable wait: the branch blocks until `deadline` (database clock; None: none),
        or until the worker sees the journal entry `settles` settled (a token, children)."""
        limit = math.inf if deadline is None else deadline
        delay = limit - self.db_now()
        if delay <= 0:
            return
        self.frontier(branch)
        future: asyncio.Future[None] = self.loop.create_future()
        handle = None
        if math.isfinite(delay):
            handle = self.loop.call_later(delay, _resolve, future, context=_NO_RUN)
        watched = None if settles is None else (self.run_id, settles)
        if watched is not None:
            self.worker.watch(watched, future)
        branch.wait_deadline, branch.wait_key = limit, settles
        self.waiting += 1
        busy, branch.busy = branch.busy, 0  # blocked, not busy, while it waits
        self.schedule_check()
        try:
            await future
        finally:
            branch.busy = busy
            if handle is not None:
                handle.cancel()
            if watched is not None:
                self.worker.unwatch(watched, future)
            branch.wait_deadline, branch.wait_key = None, None
            self.waiting -= 1
            self._resume_clock()

    async def sleep(self, branch: Branch, delay: float | None, until: float | None) -> None:
        await self.enter(branch)
        key = branch.next_key()
        entry = self.match(key, runs.EntryKind.SLEEP, "sleep")
        if entry is None:
            self.frontier(branch)
            now = self.db_now()
            wake_at = until if until is not None else now + (delay or 0.0)
            entry = runs.Entry(
                key=key,
                kind=runs.EntryKind.SLEEP,
                name="sleep",
                status=runs.EntryStatus.PENDING,
                wake_at=wake_at,
                started_at=now,
                attempt=self.attempt,
            )
            await self.record(entry)
        assert entry.wake_at is not None
        await self.wait_until(branch, entry.wake_at)

    async def step(
        self, branch: Branch, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return await steps.run(self, branch, spec, args, kwargs)

    async def create_token(
        self, branch: Branch, timeout: float | None, tags: list[str], key: str | None
    ) -> tokens.Token:
        return await token_waits.create(self, branch, timeout, tags, key)

    async def wait_for_token(self, branch: Branch, token: tokens.Token | str) -> Any:
        return await token_waits.wait(self, branch, token)

    def end_step(self, branch: Branch) -> None:
        branch.in_step -= 1
        self.steps_in_flight -= 1
        self.operation_ended()
        if self.draining and self.steps_in_flight == 0:
            self.freeze(signals.ShuttingDown())

    # --- values, logs, metadata ----------------------------------------------------------

    def value(
        self,
        branch: Branch,
        kind: str,
        make: Callable[[], Any],
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
    ) -> Any:
        index = branch.values.get(kind, 0)
        branch.values[kind] = index + 1
        key = journal.value_key(branch.id, branch.seq, kind, index)
        entry = self.journal.get(key)
        if entry is not None and entry.kind is runs.EntryKind.VALUE and entry.name == kind:
            return decode(json.loads(entry.result or "null"))
        value = make()
        recorded = runs.Entry(
            key=key,
            kind=runs.EntryKind.VALUE,
            name=kind,
            status=runs.EntryStatus.COMPLETED,
            result=json.dumps(encode(value)),
            attempt=self.attempt,
        )
        self.journal.put(recorded)
        self.pending_values.append(recorded)
        return value

    def capture_log(self, branch: Branch, level: str, message: str) -> None:
        self.logs.append(
            base.LogLine(
                attempt=self.attempt,
                branch=branch.id,
                seq=branch.seq or None,
                level=level,
                message=message,
                at=self.db_now(),
            )
        )

    def set_metadata(self, branch: Branch, key: str, value: Any) -> None:
        from perdure import serialization

        serialization.to_json(value, f"metadata {key!r}")
        if branch.replaying:
            return
        self.metadata[key] = value
        self.metadata_patch[key] = value

    def _take_progress(self) -> base.Progress | None:
        if not self.logs and not self.metadata_patch:
            return None
        progress = base.Progress(logs=self.logs, metadata=self.metadata_patch or None)
        self.logs, self.metadata_patch = [], {}
        return progress

    async def flush_progress(self) -> None:
        """Periodic: make logs and metadata visible while the run goes on."""
        if self.frozen is not None or self.body_done:
            return
        progress = self._take_progress()
        if progress is not None and not await self.store.checkpoint(self.lease, [], progress):
            self.freeze(signals.LeaseLost())

    def run_context(self, step_key: str | None = None) -> runtime.RunContext:
        c = self.claim
        return runtime.RunContext(
            run_id=self.run_id,
            task_id=self.task.id,
            attempt=self.attempt,
            tags=list(c.tags),
            version=c.version,
            parent_run_id=c.parent_id,
            root_run_id=c.root_id,
            idempotency_key=c.idempotency_key,
            step_key=step_key,
        )


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _run_error(error: BaseException) -> runs.RunError:
    described = failures.describe(error)
    return runs.RunError(
        type=described["type"], message=described["message"], traceback=described["traceback"]
    )
