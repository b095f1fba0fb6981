"""Running a step: replay from the journal, or live attempts with retries and timeouts,
each recorded; a running sync step is never interrupted."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from perdure import exceptions, failures, journal, runs, runtime, signals, telemetry

if TYPE_CHECKING:
    from perdure.branches import Branch
    from perdure.execution import Execution
    from perdure.tasks import StepSpec


class _FinishedAfterCancel(Exception):
    """A sync step finished after its branch was canceled: record it, then re-raise."""

    def __init__(self, outcome: asyncio.Future[Any]) -> None:
        self.outcome = outcome


class _Value:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


async def awaited(spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A step called in an async branch, once awaited: the branch that awaits it takes its
    key (so each step of `gather(step(), step())` is keyed in its own branch)."""
    branch = runtime.branch_for(spec.call_name)
    ex = branch.execution
    key = None
    if not ex.entry_checks():
        # The common replay, read off the claim's row: no entry made, nothing awaited.
        key = branch.next_key()
        recorded = ex.journal.completed_step(key, spec.name)
        if recorded is not journal.MISSING:
            return spec.codec.load(recorded or "null")
    branch.busy += 1  # not quiescent while the step works (its waits release this)
    try:
        return await run(ex, branch, spec, args, kwargs, key)
    finally:
        branch.busy -= 1


async def run(
    ex: Execution,
    branch: Branch,
    spec: StepSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: runs.Key | None = None,
) -> Any:
    """A step: replayed from the journal, or run live (with retries) and recorded. `key`
    when the caller took the step's key already."""
    if key is None:
        if ex.entry_checks():
            await ex.enter(branch)
        key = branch.next_key()
    entry = ex.match(key, runs.EntryKind.STEP, spec.name)
    if entry is None:
        ex.frontier(branch)
    attempts = 0
    if entry is not None:
        if entry.status is runs.EntryStatus.COMPLETED:
            return spec.codec.load(entry.result or "null")
        if entry.status is runs.EntryStatus.FAILED:
            error = failures.rebuild(entry.error or {})
            ex.failures.append((error, key))
            raise error
        attempts = entry.attempts
        if entry.wake_at is not None:
            await ex.wait_until(branch, entry.wake_at)
    if ex.pending_values:
        await ex.record()  # values the step may use are durable before it begins
    while True:
        attempts += 1
        outcome = await _attempt(ex, branch, spec, key, attempts, args, kwargs)
        if outcome is not None:
            return outcome.value
        # the attempt failed and was recorded as retrying; `_attempt` waited already


async def _attempt(
    ex: Execution,
    branch: Branch,
    spec: StepSpec,
    key: runs.Key,
    attempts: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> _Value | None:
    """One try of a step, recorded; None when it failed and waits for the next try."""
    started = ex.db_now()
    canceled = False
    failure: Exception | None = None
    entry: runs.Entry
    branch.in_step += 1
    ex.steps_in_flight += 1
    span = telemetry.step_try(
        ex.run_id, ex.claim.root_id, spec.name, key, ex.attempt, attempts, started
    )
    try:
        try:
            try:
                with span as current:
                    result = await _run_fn(ex, branch, spec, key, args, kwargs)
            except _FinishedAfterCancel as late:
                canceled = True
                result = late.outcome.result()
            text, value = spec.codec.roundtrip(result)
        except (signals.Frozen, asyncio.CancelledError):
            raise
        except Exception as error:
            failure = error
            entry = _failure_entry(ex, spec, key, attempts, started, error)
        else:
            entry = runs.Entry(
                key=key,
                kind=runs.EntryKind.STEP,
                name=spec.name,
                status=runs.EntryStatus.COMPLETED,
                result=text,
                attempts=attempts,
                started_at=started,
                finished_at=ex.db_now(),
                attempt=ex.attempt,
            )
        await ex.record(entry)
        telemetry.end_step(current, entry)
    finally:
        ex.end_step(branch)
    if canceled:
        raise asyncio.CancelledError("the run was canceled")
    if failure is None:
        return _Value(value)
    if entry.status is runs.EntryStatus.FAILED:
        ex.failures.append((failure, key))
        raise failure
    assert entry.wake_at is not None
    await ex.wait_until(branch, entry.wake_at)
    return None


def _failure_entry(
    ex: Execution, spec: StepSpec, key: runs.Key, attempts: int, started: float, error: Exception
) -> runs.Entry:
    permanent = isinstance(error, exceptions.NonRetryableError | exceptions.PayloadError)
    delay = (
        None
        if permanent
        else spec.retry.delay(attempts, retry_after=exceptions.retry_after_of(error))
    )
    now = ex.db_now()
    return runs.Entry(
        key=key,
        kind=runs.EntryKind.STEP,
        name=spec.name,
        status=runs.EntryStatus.FAILED if delay is None else runs.EntryStatus.RETRYING,
        error=failures.describe(error),
        attempts=attempts,
        started_at=started,
        finished_at=now,
        wake_at=None if delay is None else now + delay,
        attempt=ex.attempt,
    )


async def _run_fn(
    ex: Execution,
    branch: Branch,
    spec: StepSpec,
    key: runs.Key,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    scope = runtime.StepScope(branch=branch, step_key=f"{ex.run_id}:{key.branch}:{key.seq}")
    if spec.is_async:
        token = runtime.current.set(scope)
        try:
            if spec.timeout is None:  # no timer to arm: a Timeout costs a few µs per step
                return await spec.fn(*args, **kwargs)
            async with asyncio.timeout(spec.timeout):
                return await spec.fn(*args, **kwargs)
        finally:
            runtime.current.reset(token)
    ctx = contextvars.copy_context()
    ctx.run(runtime.current.set, scope)
    call: Callable[[], Any] = lambda: ctx.run(spec.fn, *args, **kwargs)  # noqa: E731
    started = time.monotonic()
    if branch.bridge is not None:
        future = branch.bridge.submit(call)
    else:
        future = ex.loop.run_in_executor(ex.worker.step_pool, call)
    result = await _uninterrupted(ex, future)
    elapsed = time.monotonic() - started
    if spec.timeout is not None and elapsed > spec.timeout:
        raise TimeoutError(
            f"step {spec.name!r} took {elapsed:.2f}s, past its timeout of {spec.timeout}s"
        )
    return result


async def _uninterrupted(ex: Execution, future: asyncio.Future[Any]) -> Any:
    """A running sync step is never interrupted: cancellation takes effect when it
    returns, and its result is still recorded."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if ex.frozen is not None:
            raise
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if ex.frozen is not None:
                raise
        except Exception:
            pass
    raise _FinishedAfterCancel(future)
