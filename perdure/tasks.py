"""Tasks (`@app.task`) and steps (`@perdure.step`, `perdure.run_step`)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from perdure import child_runs, exceptions, runtime, serialization, steps
from perdure.branches import Branch
from perdure.retry import Retry

if TYPE_CHECKING:
    from perdure.app import App, RunHandle

P = ParamSpec("P")
R = TypeVar("R")
In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    name: str
    fn: Callable[..., Any]
    retry: Retry
    timeout: float | None
    is_async: bool
    codec: serialization.Codec

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Inside a task: a durable step (awaitable in an async body, blocking in a def
        body). Outside a task, or inside another step: a plain call of the function."""
        found = runtime.current.get()
        if not isinstance(found, Branch):
            return self.fn(*args, **kwargs)
        found.check_caller(self.call_name)  # at once: from a foreign thread or callback
        if found.bridge is not None:
            return found.bridge.run(found, found.execution.step(found, self, args, kwargs))
        return steps.awaited(self, args, kwargs)  # which checks the task that awaits it

    @functools.cached_property
    def call_name(self) -> str:
        return f"step {self.name!r}"


def _spec(
    fn: Callable[..., Any], name: str | None, retry: Retry | None, timeout: float | timedelta | None
) -> StepSpec:
    step_name = name or fn.__name__
    if "\x00" in step_name:
        raise exceptions.PayloadError(
            f"step name {step_name!r} holds a NUL character, which PostgreSQL cannot store; "
            "name the step without it"
        )
    _, returns = serialization.signature_hints(fn)
    return StepSpec(
        name=step_name,
        fn=fn,
        retry=retry or Retry(),
        timeout=seconds(timeout, f"timeout of step {step_name!r}"),
        is_async=inspect.iscoroutinefunction(fn),
        codec=serialization.codec(returns, f"result of step {step_name!r}"),
    )


@overload
def step(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout: float | timedelta | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout: float | timedelta | None = None,
) -> Any:
    """Make a function a step: inside a task its result is recorded once it succeeds, and
    returned from the journal on replay. A failed call is retried per `retry` (default
    `Retry()`: 3 attempts) within the task's attempt; `timeout` (seconds) fails an attempt
    that runs longer. Task and step retries multiply: 3 task attempts x 5 step attempts
    may call the step 15 times."""

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        spec = _spec(f, name, retry, timeout)

        @functools.wraps(f)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return spec.call(*args, **kwargs)

        wrapper.__perdure_step__ = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate(fn) if fn is not None else decorate


@functools.lru_cache(maxsize=1024)
def inline_step(name: str, fn: Callable[..., Any]) -> StepSpec:
    """The spec `perdure.run_step(name, fn, ...)` uses (the function's own step options,
    if it is a decorated step, apply)."""
    inner: StepSpec | None = getattr(fn, "__perdure_step__", None)
    if inner is not None:
        return StepSpec(
            name=name,
            fn=inner.fn,
            retry=inner.retry,
            timeout=inner.timeout,
            is_async=inner.is_async,
            codec=inner.codec,
        )
    return _spec(fn, name, None, None)


def seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise exceptions.PayloadError(f"{what} takes seconds or a timedelta, not {value!r}")
    try:
        seconds = float(value)
    except OverflowError:
        raise exceptions.PayloadError(f"{what} takes a number of seconds a float holds") from None
    if math.isnan(seconds):
        raise exceptions.PayloadError(f"{what} takes a number of seconds, not nan")
    return seconds


class Task(Generic[In, Out]):
    """A registered task: call `trigger` to start a run of it."""

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        *,
        id: str,
        retry: Retry | None,
        queue: str | None,
        concurrency_limit: int | None,
        max_duration: float | timedelta | None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.id = id
        self.retry = retry or Retry()
        self.queue = queue or id
        self.concurrency_limit = concurrency_limit
        self.max_duration = seconds(max_duration, "max_duration")
        self.is_async = inspect.iscoroutinefunction(fn)
        params = list(inspect.signature(fn).parameters.values())
        if len(params) > 1:
            raise exceptions.ConfigurationError(
                f"task {id!r} takes {len(params)} parameters; a task takes one payload "
                "(a model, a dataclass or a dict) or none"
            )
        self.takes_payload = bool(params)
        payload_hint, output_hint = serialization.signature_hints(fn)
        self.payload_codec = serialization.codec(payload_hint, f"payload of task {id!r}")
        self.output_codec = serialization.codec(output_hint, f"output of task {id!r}")
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.id!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, with no durability (handy in unit tests)."""
        return self.fn(*args, **kwargs)

    def invoke(self, payload: Any) -> Any:
        return self.fn(payload) if self.takes_payload else self.fn()

    def trigger(
        self,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        delay: float | timedelta | datetime | None = None,
        ttl: float | timedelta | None = None,
        tags: list[str] | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        priority: int = 0,
    ) -> Any:
        """Start a run; await it for its handle. The payload is validated here: a bad one
        raises PayloadError and creates nothing. With an idempotency key held by a run of
        this task, returns that run's handle (`is_cached` true).

        Inside a task it is a durable operation: the child (parent and root recorded) is
        created once for its journal position, whatever replays happen; in a `def` task
        it returns the handle directly."""
        if isinstance(runtime.current.get(), Branch):
            options = self._child_options(delay, ttl, tags, queue, concurrency_key, priority)
            return runtime.durable(
                "trigger",
                lambda b: child_runs.start(b.execution, b, self, [payload], options, "trigger"),
            )
        return self.app.trigger(
            self,
            payload,
            idempotency_key=idempotency_key,
            delay=delay,
            ttl=ttl,
            tags=tags,
            queue=queue,
            concurrency_key=concurrency_key,
            priority=priority,
        )

    def trigger_and_wait(self, payload: Any = None, **options: Any) -> Any:
        """Inside a task: start a child run and durably wait for it; its typed output, or
        ChildRunFailed carrying its error (`error.type == "RunCanceled"` if it was
        canceled). The waiting run holds no concurrency slot."""
        opts = self._child_options(**options)
        return runtime.durable(
            "trigger_and_wait",
            lambda b: child_runs.start(b.execution, b, self, [payload], opts, "wait"),
        )

    def batch_trigger_and_wait(self, payloads: list[Any], **options: Any) -> Any:
        """Inside a task: start one child per payload and durably wait for all of them;
        a `perdure.Result` per payload, in order (`.ok`, `.output`, `.error`,
        `.unwrap()`). One failed child never loses the others' results."""
        items = list(payloads)
        opts = self._child_options(**options)
        return runtime.durable(
            "batch_trigger_and_wait",
            lambda b: child_runs.start(b.execution, b, self, items, opts, "batch"),
        )

    def _child_options(
        self,
        delay: float | timedelta | datetime | None = None,
        ttl: float | timedelta | None = None,
        tags: list[str] | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        priority: int = 0,
    ) -> child_runs.Options:
        if isinstance(delay, datetime):
            raise exceptions.PayloadError(
                "inside a task, delay= takes seconds or a timedelta (a datetime would "
                "differ between replays)"
            )
        return child_runs.Options(
            tags=tags,
            queue=queue,
            concurrency_key=concurrency_key,
            priority=priority,
            delay=seconds(delay, "delay"),
            ttl=seconds(ttl, "ttl"),
        )

    def trigger_sync(self, payload: Any = None, **options: Any) -> RunHandle[Out]:
        """`trigger` for code without an event loop."""
        return self.app.portal.run(self.trigger(payload, **options))
