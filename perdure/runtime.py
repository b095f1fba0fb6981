"""The context variable of the current run, and the durable calls made through it.

The public functions here (sleep, sleep_until, now, random, uuid4, context, metadata,
logger, run_step) find the current run's branch through `current`. In an `async def` task
they are awaited (the time ones are plain calls); in a plain `def` task the same calls
block and return the value: they see that they run on the task's own thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid as _uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from perdure import exceptions

if TYPE_CHECKING:
    from perdure.branches import Branch


@dataclass(frozen=True, kw_only=True)
class StepScope:
    """Set while a step's own code runs: durable calls are not allowed there."""

    branch: Branch
    step_key: str


current: contextvars.ContextVar[Branch | StepScope | None] = contextvars.ContextVar(
    "perdure_current", default=None
)


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What `perdure.context()` returns inside a task or a step."""

    run_id: str
    task_id: str
    attempt: int
    tags: list[str]
    version: str | None
    parent_run_id: str | None
    root_run_id: str
    idempotency_key: str | None
    step_key: str | None = None


def branch_for(call: str) -> Branch:
    """The branch a durable call belongs to, checking it is made where it may be."""
    found = current.get()
    if found is None:
        raise RuntimeError(f"perdure.{call}() was called outside a task run")
    if isinstance(found, StepScope):
        raise RuntimeError(
            f"perdure.{call}() was called inside a step; durable calls belong to the task "
            "body, not to a step's own code"
        )
    found.check_caller(call)
    return found


def durable(call: str, operation: Callable[[Branch], Coroutine[Any, Any, Any]]) -> Any:
    """Start a durable operation from the caller's branch: in a `def` body it runs now and
    returns the value; in an async branch it returns a coroutine that takes its journal
    key from the branch that awaits it (so `gather(step(), step())` keys each in its own
    branch)."""
    found = current.get()
    if found is not None and not isinstance(found, StepScope) and found.bridge is not None:
        found.check_caller(call)
        return found.bridge.run(found, operation(found))
    branch_for(call)  # fail at once outside a run or from a foreign thread
    return _when_awaited(call, operation)


async def _when_awaited(call: str, operation: Callable[[Branch], Coroutine[Any, Any, Any]]) -> Any:
    branch = branch_for(call)
    branch.busy += 1  # not quiescent while the operation works (its waits release this)
    try:
        return await operation(branch)
    finally:
        branch.busy -= 1
        branch.execution.operation_ended()


def _seconds(value: float | timedelta, what: str) -> float:
    from perdure import tasks

    seconds = tasks.seconds(value, what)
    assert seconds is not None
    return seconds


def sleep(duration: float | timedelta) -> Any:
    """Durably wait: the deadline is recorded, so a restarted sleep never starts over."""
    seconds = _seconds(duration, "perdure.sleep")
    return durable("sleep", lambda b: b.execution.sleep(b, delay=seconds, until=None))


def sleep_until(when: datetime) -> Any:
    """Durably wait until an aware datetime."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise exceptions.PayloadError(
            f"perdure.sleep_until needs a timezone-aware datetime, not {when!r}; "
            "use datetime.now(UTC) + timedelta(...)"
        )
    until = when.timestamp()
    return durable("sleep_until", lambda b: b.execution.sleep(b, delay=None, until=until))


def create_token(
    *,
    timeout: float | timedelta | None = None,
    tags: list[str] | None = None,
    idempotency_key: str | None = None,
) -> Any:
    """Create a token that something outside the run completes (an API call, its URL, the
    CLI): a human approval, a webhook. Returns `Token(id, url)`; the same token on every
    replay. With `idempotency_key`, an open token holding that key is returned instead."""
    seconds = None if timeout is None else _seconds(timeout, "create_token(timeout=...)")
    tag_list = list(tags or [])
    return durable(
        "create_token",
        lambda b: b.execution.create_token(b, seconds, tag_list, idempotency_key),
    )


def wait_for_token(token: Any) -> Any:
    """Durably wait until the token is completed and return the JSON data it was completed
    with; raises `perdure.WaitTimeout` when its timeout passes first. The run leaves worker
    memory while it waits."""
    return durable("wait_for_token", lambda b: b.execution.wait_for_token(b, token))


def run_step(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run `fn(*args, **kwargs)` as a step named `name`: its result is recorded once it
    succeeds and returned from the journal on replay."""
    from perdure import tasks

    return tasks.inline_step(name, fn).call(*args, **kwargs)


def _value(
    kind: str, make: Callable[[], Any], encode: Callable[[Any], Any], decode: Callable[[Any], Any]
) -> Any:
    found = current.get()
    if found is None or isinstance(found, StepScope):
        return make()  # outside a task, or inside a step: a plain value
    found.check_caller(kind)
    return found.execution.value(found, kind, make, encode, decode)


def now() -> datetime:
    """The current time (UTC), recorded so that every replay sees the same value."""
    return _value(  # type: ignore[no-any-return]
        "now", lambda: datetime.now(UTC), lambda v: v.isoformat(), datetime.fromisoformat
    )


def random() -> float:
    """A random float in [0, 1), recorded so that every replay sees the same value."""
    import random as _random

    return _value("random", _random.random, float, float)  # type: ignore[no-any-return]


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded so that every replay sees the same value."""
    return _value("uuid4", _uuid.uuid4, str, _uuid.UUID)  # type: ignore[no-any-return]


def context() -> RunContext:
    """The current run: ids, attempt, tags, version; inside a step also `step_key`, a
    stable idempotency key for that step to pass to external APIs."""
    found = current.get()
    if found is None:
        raise RuntimeError("perdure.context() was called outside a task run")
    if isinstance(found, StepScope):
        return found.branch.execution.run_context(step_key=found.step_key)
    return found.execution.run_context()


class _Metadata:
    """`perdure.metadata.set(key, value)`: live JSON metadata of the run (progress,
    counters), shown in the dashboard."""

    def set(self, key: str, value: Any) -> None:
        found = current.get()
        if found is None:
            return  # outside a run (a task called directly in a unit test): nothing to show
        branch = found.branch if isinstance(found, StepScope) else found
        branch.execution.set_metadata(branch, key, value)

    def get(self, key: str, default: Any = None) -> Any:
        found = current.get()
        if found is None:
            return default
        branch = found.branch if isinstance(found, StepScope) else found
        return branch.execution.metadata.get(key, default)


metadata = _Metadata()


class RunLogger:
    """`perdure.logger`: logs attached to the current run and its current step (shown in
    its trace), and passed on to the standard `perdure.task` logger. Nothing is emitted
    again while a run replays what its journal already holds."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def log(
        self,
        level: int,
        msg: str,
        *args: Any,
        exc_info: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Any = None,
    ) -> None:
        found = current.get()
        if found is not None:
            branch = found.branch if isinstance(found, StepScope) else found
            if branch.replaying:
                return
            if level >= logging.INFO or self.logger.isEnabledFor(level):
                text = msg % args if args else str(msg)
                branch.execution.capture_log(branch, logging.getLevelName(level), text)
        self.logger.log(
            level,
            msg,
            *args,
            exc_info=exc_info,
            stack_info=stack_info,
            stacklevel=stacklevel + 1,
            extra=extra,
        )

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True, **kwargs)

    def critical(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)


logger = RunLogger("perdure.task")


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
