"""App: the task registry, its settings, and the client calls (trigger, runs)."""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from perdure import exceptions, runs, serialization, settings, store, tokens
from perdure.retry import Retry
from perdure.store import base
from perdure.tasks import Out, Task
from perdure.trace import Trace, settled_sleeps

T = TypeVar("T")


def new_id(prefix: str) -> str:
    """A time-ordered id: 48 bits of milliseconds, 80 random bits."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return f"{prefix}_{runs.base32_digits(value)}"


class Portal:
    """Runs the async core for code without an event loop: the sync twins."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="perdure-portal", daemon=True
                ).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


class RunHandle(Generic[T]):
    """A started run: its id, and a way to wait for its output."""

    def __init__(self, app: App, task: Task[Any, T] | None, id: str, is_cached: bool) -> None:
        self.app = app
        self.task = task
        self.id = id
        self.is_cached = is_cached

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}{' (cached)' if self.is_cached else ''}>"

    async def result(self, timeout: float | None = None) -> T:
        """The typed output once the run completes. Raises RunFailed (also for timed_out
        and expired runs), RunCanceled, or TimeoutError when `timeout` passes first."""
        run = await self.app.runs.wait(self.id, timeout=timeout)
        if run.status is runs.RunStatus.COMPLETED:
            if self.task is None:
                return run.output  # type: ignore[no-any-return]
            return self.task.output_codec.validate(run.output)  # type: ignore[no-any-return]
        if run.status is runs.RunStatus.CANCELED:
            raise exceptions.RunCanceled(run.id)
        raise exceptions.RunFailed(run.id, run.error or _status_error(run.status))

    def result_sync(self, timeout: float | None = None) -> T:
        return self.app.portal.run(self.result(timeout))


def _status_error(status: runs.RunStatus) -> runs.RunError:
    return runs.RunError(type=status.value, message=f"the run ended {status.value}")


class Runs:
    """`app.runs`: read and steer runs. Each call has a `_sync` twin."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def get(self, run_id: str) -> runs.Run:
        found = await (await self.app.store()).get_run(run_id)
        if found is None:
            raise exceptions.RunNotFound(f"no run has the id {run_id!r}")
        return found

    async def list(
        self,
        *,
        status: str | runs.RunStatus | list[str | runs.RunStatus] | None = None,
        task_id: str | None = None,
        tag: str | None = None,
        parent_id: str | None = None,
        root_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> list[runs.Run]:
        """Runs matching every filter given, newest first. Page with `cursor=` set to the
        id of the last run of the previous page."""
        statuses = [status] if isinstance(status, str) else status
        filter = base.RunFilter(
            status=None if statuses is None else [runs.RunStatus(s).value for s in statuses],
            task_id=task_id,
            tag=tag,
            parent_id=parent_id,
            root_id=root_id,
            created_after=None if created_after is None else created_after.timestamp(),
            created_before=None if created_before is None else created_before.timestamp(),
            limit=limit,
            cursor=cursor,
        )
        return await (await self.app.store()).list_runs(filter)

    async def cancel(self, run_id: str) -> runs.Run:
        """Cancel a run: at once if nobody executes it; a running one gets CancelledError
        in every branch and ends canceled after its cleanup (within cancel_grace_seconds)."""
        return await (await self.app.store()).cancel_run(run_id)

    async def retry(self, run_id: str) -> runs.Run:
        """The same run, a new attempt on its kept journal (after a fix, say)."""
        db = await self.app.store()
        return await db.retry_run(run_id, self.app.settings.idempotency_key_ttl)

    async def replay(
        self, run_id: str, payload: Any = None, from_position: Any = None
    ) -> RunHandle[Any]:
        """A new run of the same task, with `payload` if given. With `from_position`, a
        journal key `[branch, seq]`, the entries committed before it are copied (a fork)."""
        original = await self.get(run_id)
        task = self.app.tasks.get(original.task_id)
        text = None
        if payload is not None:
            if task is None:
                raise exceptions.ConfigurationError(
                    f"this app has no task {original.task_id!r} to validate the new payload; "
                    "pass the app that defines it (--app module:attribute or PERDURE_APP)"
                )
            text = self.app.encode_payload(task, payload)
        before = None if from_position is None else _position(from_position)
        new = new_id("run")
        await (await self.app.store()).replay_run(run_id, new, text, before)
        return RunHandle(self.app, task, new, False)

    async def wait(self, run_id: str, timeout: float | None = None) -> runs.Run:
        """Wait until the run is finished; TimeoutError when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            run = await self.get(run_id)
            if run.status.is_terminal:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status.value} after {timeout}s")
            wait = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
            await asyncio.sleep(wait)
            pause = min(pause * 1.5, 0.2)

    async def trace(self, run_id: str) -> Trace:
        """The run with its journal entries, status transitions and logs."""
        run = await self.get(run_id)
        db = await self.app.store()
        return Trace(
            run=run,
            entries=settled_sleeps(await db.journal(run_id), await db.now()),
            events=await db.events(run_id),
            logs=await db.logs(run_id),
        )

    def trace_sync(self, run_id: str) -> Trace:
        return self.app.portal.run(self.trace(run_id))

    def get_sync(self, run_id: str) -> runs.Run:
        return self.app.portal.run(self.get(run_id))

    def list_sync(self, **filters: Any) -> builtins.list[runs.Run]:
        return self.app.portal.run(self.list(**filters))

    def cancel_sync(self, run_id: str) -> runs.Run:
        return self.app.portal.run(self.cancel(run_id))

    def retry_sync(self, run_id: str) -> runs.Run:
        return self.app.portal.run(self.retry(run_id))

    def replay_sync(
        self, run_id: str, payload: Any = None, from_position: Any = None
    ) -> RunHandle[Any]:
        return self.app.portal.run(self.replay(run_id, payload, from_position))

    def wait_sync(self, run_id: str, timeout: float | None = None) -> runs.Run:
        return self.app.portal.run(self.wait(run_id, timeout))


class Tokens:
    """`app.tokens`: complete and inspect tokens. Each call has a `_sync` twin."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def complete(self, token_id: str, data: Any = None) -> tokens.TokenRecord:
        """Complete a waiting token with JSON `data`, waking the runs waiting on it. The
        first completion wins: completing again, an unknown token or a timed-out one raise
        a clear error."""
        text = serialization.to_json(data, f"data for token {token_id}")
        limit = self.app.settings.max_payload_bytes
        if len(text.encode()) > limit:
            raise exceptions.PayloadError(
                f"data for token {token_id} is {len(text.encode())} bytes, over "
                f"max_payload_bytes={limit}"
            )
        await (await self.app.store()).complete_token(token_id, text)
        return await self.get(token_id)

    async def get(self, token_id: str) -> tokens.TokenRecord:
        row = await (await self.app.store()).get_token(token_id)
        if row is None:
            raise exceptions.TokenNotFound(f"no token has the id {token_id!r}")
        return await self._record(row)

    async def list(
        self,
        *,
        status: str | tokens.TokenStatus | None = None,
        run_id: str | None = None,
        tag: str | None = None,
        limit: int = 100,
    ) -> builtins.list[tokens.TokenRecord]:
        """Tokens matching every filter given, newest first."""
        value = None if status is None else tokens.TokenStatus(status).value
        rows = await (await self.app.store()).list_tokens(value, run_id, tag, limit)
        return [await self._record(row) for row in rows]

    async def _record(self, row: dict[str, Any]) -> tokens.TokenRecord:
        secret = await self.app.token_secret()
        expired = (
            row["status"] == "waiting"
            and row["timeout_at"] is not None
            and (row["timeout_at"] <= time.time())
        )
        return tokens.TokenRecord(
            id=row["id"],
            url=tokens.url_for(self.app.settings.public_url, secret, row["id"]),
            status=tokens.TokenStatus("timed_out" if expired else row["status"]),
            data=None if row["data"] is None else json.loads(row["data"]),
            run_id=row["run_id"],
            tags=json.loads(row["tags"]),
            idempotency_key=row["idempotency_key"],
            timeout_at=_time(row["timeout_at"]),
            created_at=_time(row["created_at"]),
            completed_at=_time(row["completed_at"]),
        )

    def complete_sync(self, token_id: str, data: Any = None) -> tokens.TokenRecord:
        return self.app.portal.run(self.complete(token_id, data))

    def get_sync(self, token_id: str) -> tokens.TokenRecord:
        return self.app.portal.run(self.get(token_id))

    def list_sync(self, **filters: Any) -> builtins.list[tokens.TokenRecord]:
        return self.app.portal.run(self.list(**filters))


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _position(value: Any) -> runs.Key:
    if isinstance(value, runs.Key):
        return value
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        return runs.Key(branch=value[0], seq=value[1])
    raise exceptions.PayloadError(
        f"from_position must be a journal key [branch, seq] such as ['0', 3], not {value!r}"
    )


class App:
    """The registry of tasks plus its configuration.

    `App()` reads its database URL from `database_url=`, else PERDURE_DATABASE_URL, else
    `sqlite:///perdure.db`; every other setting likewise (see `perdure.settings`)."""

    def __init__(self, database_url: str | None = None, **options: Any) -> None:
        self.settings = settings.resolve({"database_url": database_url, **options})
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.queue_limits: dict[str, int | None] = {}
        self.runs = Runs(self)
        self.tokens = Tokens(self)
        self._secret: str | None = None
        self.portal = Portal()
        self._store: base.Store | None = None
        self._store_pid = 0
        self._store_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<App {self.settings.database_url} tasks={sorted(self.tasks)}>"

    # --- registration ----------------------------------------------------------------

    def task(
        self,
        *,
        id: str,
        retry: Retry | None = None,
        queue: str | None = None,
        concurrency_limit: int | None = None,
        max_duration: float | timedelta | None = None,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Register a function as a task. `queue` defaults to a queue of its own, named
        after `id`; `concurrency_limit` caps the runs of that queue running at once, across
        every worker; `max_duration` (seconds) caps an attempt's executing time."""

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = Task(
                self,
                f,
                id=id,
                retry=retry,
                queue=queue,
                concurrency_limit=concurrency_limit,
                max_duration=max_duration,
            )
            self._register(task)
            return task

        return register

    def _register(self, task: Task[Any, Any]) -> None:
        if not task.id or not isinstance(task.id, str):
            raise exceptions.ConfigurationError("a task needs a non-empty string id")
        if task.id in self.tasks:
            raise exceptions.ConfigurationError(f"two tasks have the id {task.id!r}")
        declared = self.queue_limits.get(task.queue)
        limit = task.concurrency_limit
        if limit is not None and limit < 1:
            raise exceptions.ConfigurationError(
                f"task {task.id!r}: concurrency_limit must be at least 1"
            )
        if declared is not None and limit is not None and declared != limit:
            raise exceptions.ConfigurationError(
                f"queue {task.queue!r} is declared with concurrency_limit {declared} and "
                f"{limit} (by task {task.id!r}); declare a queue's limit once"
            )
        self.queue_limits[task.queue] = limit if limit is not None else declared
        self.tasks[task.id] = task

    # --- the store -------------------------------------------------------------------

    async def store(self) -> base.Store:
        """The opened store of this process (opened on first use)."""
        with self._store_lock:
            if self._store is None or self._store_pid != os.getpid():
                self._store = store.from_settings(self.settings)
                self._store_pid = os.getpid()
            db = self._store
        await db.open()
        return db

    async def token_secret(self) -> str:
        """The secret that signs token URLs: `secret_key`, else one generated once and kept
        in the store, so every worker and server shares it."""
        if self._secret is None:
            given = self.settings.secret_key
            self._secret = given or await (await self.store()).secret(secrets.token_hex(32))
        return self._secret

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    # --- triggering ------------------------------------------------------------------

    def encode_payload(self, task: Task[Any, Any], payload: Any) -> str:
        text = task.payload_codec.dump(task.payload_codec.validate(payload))
        size = len(text.encode())
        limit = self.settings.max_payload_bytes
        if size > limit:
            raise exceptions.PayloadError(
                f"payload of task {task.id!r} is {size} bytes, over max_payload_bytes={limit}; "
                "store large data elsewhere and pass a reference"
            )
        return text

    async def trigger(
        self,
        task: Task[Any, Out],
        payload: Any,
        *,
        idempotency_key: str | None = None,
        delay: float | timedelta | datetime | None = None,
        ttl: float | timedelta | None = None,
        tags: list[str] | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        priority: int = 0,
    ) -> RunHandle[Out]:
        """Start a run of `task` (which may belong to another App: a client of this
        App's database needs only the task's definition)."""
        text = self.encode_payload(task, payload)
        if isinstance(delay, datetime):
            if delay.tzinfo is None:
                raise exceptions.PayloadError("delay= needs a timezone-aware datetime")
            delay = delay.timestamp() - time.time()
        tag_list = list(tags or [])
        if not all(isinstance(t, str) for t in tag_list):
            raise exceptions.PayloadError("tags must be a list of strings")
        for name, value in (
            ("tags", tag_list),
            ("idempotency_key", [idempotency_key]),
            ("queue", [queue]),
            ("concurrency_key", [concurrency_key]),
        ):
            if any(isinstance(v, str) and "\x00" in v for v in value):
                raise exceptions.PayloadError(f"{name} must not contain a NUL character")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise exceptions.PayloadError(f"priority must be an integer, not {priority!r}")
        if not -(2**31) <= priority < 2**31:
            raise exceptions.PayloadError("priority must fit in 32 bits (±2,147,483,647)")
        run_id = new_id("run")
        new = base.NewRun(
            id=run_id,
            task_id=task.id,
            queue=queue or task.queue,
            payload=text,
            root_id=run_id,
            concurrency_key=concurrency_key,
            priority=priority,
            tags=tag_list,
            idempotency_key=idempotency_key,
            idempotency_key_ttl=self.settings.idempotency_key_ttl,
            delay=_seconds(delay, "delay"),
            ttl=_seconds(ttl, "ttl"),
        )
        found, cached = await (await self.store()).create_run(new)
        return RunHandle(self, task, found, cached)


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    from perdure import tasks

    return tasks.seconds(value, what)
