"""Builders and waiting helpers shared by the store contract tests.

Nothing here knows a backend: it builds the protocol's values (`base.NewRun`, journal
entries, worker infos) and polls the store through its methods.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from perdure import runs
from perdure.store import base

T = TypeVar("T")

TASK = "task-a"
OTHER_TASK = "task-b"
QUEUE = "queue-a"
DEADLINE = 5.0  # seconds a condition may take to become true before a test fails


def fresh_id(prefix: str = "run") -> str:
    """A unique id that is NOT time-ordered (random first), like ids a caller may derive."""
    return f"{prefix}_{uuid.uuid4().hex}"


def new_run(**fields: Any) -> base.NewRun:
    """A `NewRun` of TASK in QUEUE with a unique id; any field may be overridden."""
    run_id = fields.pop("id", None) or fresh_id()
    defaults: dict[str, Any] = {
        "id": run_id,
        "task_id": TASK,
        "queue": QUEUE,
        "payload": '{"n": 1}',
        "root_id": run_id,
    }
    return base.NewRun(**{**defaults, **fields})


def worker_info(worker_id: str, version: str | None = None) -> base.WorkerInfo:
    return base.WorkerInfo(
        id=worker_id, hostname="test-host", pid=os.getpid(), version=version, concurrency=10
    )


def entry(
    branch: str = "0",
    seq: int = 1,
    *,
    result: str | None = '"ok"',
    status: runs.EntryStatus = runs.EntryStatus.COMPLETED,
    name: str = "step",
    kind: runs.EntryKind = runs.EntryKind.STEP,
    sub: str = "",
    attempt: int = 1,
) -> runs.Entry:
    return runs.Entry(
        key=runs.Key(branch=branch, seq=seq, sub=sub),
        kind=kind,
        name=name,
        status=status,
        result=result,
        attempts=1,
        attempt=attempt,
    )


def keys(entries: list[runs.Entry]) -> list[tuple[str, int, str]]:
    return [(e.key.branch, e.key.seq, e.key.sub) for e in entries]


async def eventually(check: Callable[[], Awaitable[T]], what: str, timeout: float = DEADLINE) -> T:
    """Poll `check` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {what} (last: {value!r})")
        await asyncio.sleep(0.002)


@dataclass
class Worker:
    """A registered worker and the store it talks through (one per simulated process)."""

    id: str
    store: base.Store

    async def claim(
        self,
        task_ids: list[str] | None = None,
        limit: int = 10,
        max_recoveries: int = 5,
        version: str | None = None,
    ) -> list[base.Claim]:
        return await self.store.claim(self.id, task_ids or [TASK], version, limit, max_recoveries)

    async def claim_one(self, **options: Any) -> base.Claim:
        claims = await self.claim(limit=1, **options)
        assert len(claims) == 1, f"expected one claim, got {claims}"
        return claims[0]


# A process that registers a worker, claims what it can, reports, and waits to be killed.
CHILD_WORKER = """
import asyncio, os, sys
from perdure.settings import Settings
from perdure.store import base, from_settings

async def main(url, worker_id, task_id):
    store = from_settings(Settings(database_url=url))
    await store.open()
    await store.register_worker(base.WorkerInfo(
        id=worker_id, hostname="child", pid=os.getpid(), version=None, concurrency=10))
    claims = await store.claim(worker_id, [task_id], None, 10, 5)
    print(" ".join(c.lease.run_id for c in claims) or "-", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def leased(worker: Worker, **fields: Any) -> base.Claim:
    """A new run, claimed by `worker` (which must have nothing else to claim)."""
    new = new_run(**fields)
    await worker.store.create_run(new)
    claim = await worker.claim_one()
    assert claim.lease.run_id == new.id
    return claim


async def one_batch(store: Any, *calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """The calls' outcomes (exceptions included), their writes committed in one batch: the
    store's thread is held until every call has handed its write over. Each call makes one
    write (the batch holds what was handed over, in that order)."""
    import threading

    held, go = threading.Event(), threading.Event()
    blocker = store._submit(lambda tx: held.set() or go.wait(DEADLINE), False)
    try:
        assert await asyncio.to_thread(held.wait, DEADLINE), "the store's thread is busy"
        pending = [asyncio.ensure_future(call()) for call in calls]
        deadline = time.monotonic() + DEADLINE
        while store._handed < len(calls) + 1:  # the blocker, then each call's write
            assert time.monotonic() < deadline, "the calls did not all reach the store"
            await asyncio.sleep(0.001)
    finally:
        go.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), DEADLINE)
    await asyncio.wrap_future(blocker)
    return list(outcomes)


async def in_status(worker: Worker, status: runs.RunStatus, **fields: Any) -> str:
    """A new run brought to `status` through the protocol (by `worker` where it must run).
    The worker must have nothing else to claim."""
    store = worker.store
    if status is runs.RunStatus.DELAYED:
        fields = {"delay": 3600, **fields}
    run_id, _ = await store.create_run(new_run(**fields))
    if status in (runs.RunStatus.QUEUED, runs.RunStatus.DELAYED):
        return run_id
    claim = await worker.claim_one(task_ids=[fields.get("task_id", TASK)])
    assert claim.lease.run_id == run_id
    lease = claim.lease
    if status is runs.RunStatus.WAITING:
        assert await store.suspend(lease, await store.now() + 3600, 0.0, None)
    elif status is runs.RunStatus.RETRYING:
        error = runs.RunError(type="ValueError", message="boom")
        assert await store.retry_later(lease, error, 3600, [], None)
    elif status.is_terminal:
        error = None
        if status is not runs.RunStatus.COMPLETED:
            error = runs.RunError(type="ValueError", message=f"ended {status.value}")
        output = '"done"' if status is runs.RunStatus.COMPLETED else None
        assert await store.finish(lease, status, output, error, [], None)
    else:
        assert status is runs.RunStatus.RUNNING, f"cannot bring a run to {status}"
    return run_id


async def start_child_worker(
    url: str, worker_id: str, task_id: str = TASK
) -> tuple[asyncio.subprocess.Process, list[str]]:
    """A real worker process: returns it (alive, registered) and the run ids it claimed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD_WORKER,
        url,
        worker_id,
        task_id,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode().strip()
    assert line, f"the child worker exited early (code {await proc.wait()})"
    return proc, [] if line == "-" else line.split()
