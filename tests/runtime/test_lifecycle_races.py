"""Races in a run's life: cancellation of a waiting run, suspension decided while a
branch is busy, shutdown with a step in flight, a worker declared dead, branches that
outlive the body, a store error while suspending."""

from __future__ import annotations

import asyncio
import time

import pytest

import perdure
from perdure import testing
from tests.postgres import execute


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _is(app, run_id, status) -> bool:
    return (await app.runs.get(run_id)).status is status


@pytest.mark.parametrize("plain_def", [False, True], ids=["async", "def"])
async def test_a_canceled_waiting_run_gets_cancelled_error_at_its_wait_and_cleans_up(
    make_app, plain_def
):
    app = make_app(suspend_after=0.2)
    cleaned: list[str] = []

    @perdure.step
    def work() -> int:
        return 1

    @perdure.step
    def cleanup() -> str:
        cleaned.append("cleanup")
        return "ok"

    if plain_def:

        @app.task(id="waits")
        def waits() -> None:
            try:
                work()  # replayed inside the try: the cancel must not land here
                perdure.sleep(60)
            except asyncio.CancelledError:
                cleanup()
                raise

    else:

        @app.task(id="waits")
        async def waits() -> None:
            try:
                await work()
                await perdure.sleep(60)
            except asyncio.CancelledError:
                await cleanup()
                raise

    async with testing.worker(app):
        handle = await waits.trigger()
        await until(lambda: _is(app, handle.id, perdure.RunStatus.WAITING))
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=10)
    assert cleaned == ["cleanup"]


async def test_a_def_task_that_caught_its_cancellation_may_run_cleanup_steps(make_app):
    app = make_app(suspend_after=30)  # stays in memory while it sleeps
    seen: list[str] = []

    @perdure.step
    def cleanup() -> None:
        seen.append("cleanup ran")

    @app.task(id="plain-cancel")
    def plain_cancel() -> None:
        try:
            perdure.sleep(20)
        except asyncio.CancelledError:
            seen.append("caught")
            cleanup()
            raise

    async with testing.worker(app) as worker:
        handle = await plain_cancel.trigger()
        await until(lambda: _sleeping(app, handle.id))
        assert handle.id in worker.active
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=10)
    assert seen == ["caught", "cleanup ran"]


async def _sleeping(app, run_id) -> bool:
    return any(e.kind.value == "sleep" for e in (await app.runs.trace(run_id)).entries)


async def test_a_branch_writing_its_sleep_does_not_let_the_run_suspend_on_another_branch(
    make_app,
):
    app = make_app(suspend_after=2.0)
    finished: list[float] = []

    @perdure.step
    async def work() -> int:
        return 1

    async def parked() -> None:
        await perdure.sleep(30)

    @app.task(id="short-and-long")
    async def short_and_long() -> None:
        child = asyncio.create_task(parked())
        await work()
        started = time.monotonic()
        await perdure.sleep(0.5)
        finished.append(time.monotonic() - started)
        child.cancel()

    async with testing.worker(app):
        handle = await short_and_long.trigger()
        await handle.result(timeout=10)  # not 30 s: the short sleep was not frozen
    assert finished and finished[0] < 5


async def test_shutdown_records_a_step_in_flight_while_another_branch_moves_on(make_app):
    app = make_app(suspend_after=30)
    calls: list[str] = []

    @perdure.step
    def slow() -> str:
        calls.append("slow")
        time.sleep(1.0)
        return "slow done"

    @perdure.step
    def quick() -> str:
        return "q"

    async def other() -> None:
        await perdure.sleep(0.3)
        await quick()

    @app.task(id="drain")
    async def drain() -> None:
        await asyncio.gather(slow(), other())

    async with testing.worker(app):
        handle = await drain.trigger()
        await until(lambda: _called(calls))
    entries = {e.name: e.status.value for e in (await app.runs.trace(handle.id)).entries}
    assert entries.get("slow") == "completed"  # finished and recorded, not thrown away
    async with testing.worker(app):
        await handle.result(timeout=10)
    assert calls == ["slow"]


async def _called(calls: list[str]) -> bool:
    return bool(calls)


async def test_a_worker_declared_dead_does_not_take_its_own_runs_over(make_app, database_url):
    app = make_app(lease_seconds=30, heartbeat_seconds=10, suspend_after=30)

    @perdure.step
    def slow(i: int) -> int:
        time.sleep(0.2)
        return i

    @app.task(id="long")
    async def long_task() -> str:
        for i in range(8):
            await slow(i)
        return "done"

    async with testing.worker(app) as worker:
        handle = await long_task.trigger()
        await until(lambda: _is(app, handle.id, perdure.RunStatus.RUNNING))
        # what another worker's reaper would do
        execute(database_url, "UPDATE workers SET dead_at = {now} WHERE id = {id}", worker.id)
        await asyncio.sleep(1.0)  # several claim rounds under the dead id
        events = (await app.runs.trace(handle.id)).events
    assert not any(e.detail == "takeover" and e.worker_id == worker.id for e in events)
    run = await app.runs.get(handle.id)
    assert run.recoveries == 0


async def test_branches_left_running_by_the_body_run_no_step_after_the_run_ends(make_app):
    app = make_app()
    effects: list[str] = []

    @perdure.step
    def late_effect() -> None:
        effects.append("effect")

    async def later() -> None:
        await asyncio.sleep(0.3)  # not durable
        await late_effect()

    @app.task(id="fire-and-forget")
    async def fire_and_forget() -> str:
        asyncio.create_task(later())  # noqa: RUF006 - the point of the test
        return "done"

    async with testing.worker(app):
        handle = await fire_and_forget.trigger()
        assert await handle.result(timeout=10) == "done"
        await asyncio.sleep(0.6)  # past the branch's wake-up: it must have been stopped
    assert effects == []


async def test_a_store_error_while_suspending_hands_the_run_back(make_app):
    app = make_app(suspend_after=0.2)
    store = await app.store()
    original = store.suspend
    failures = {"left": 1}

    async def flaky(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise perdure.StoreError("database is locked (injected)")
        return await original(*args, **kwargs)

    store.suspend = flaky

    @app.task(id="naps")
    async def naps() -> str:
        await perdure.sleep(1.0)
        return "rested"

    async with testing.worker(app):
        handle = await naps.trigger()
        assert await handle.result(timeout=10) == "rested"
    assert failures["left"] == 0
