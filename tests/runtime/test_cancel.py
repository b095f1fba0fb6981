"""Cancellation (DESIGN §3): queued, waiting and running runs; cleanup on cancel."""

from __future__ import annotations

import asyncio
import time

import pytest

import perdure
from perdure import testing


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_queued_run_is_canceled_at_once(make_app):
    app = make_app()

    @app.task(id="never")
    async def never() -> None:
        raise AssertionError("a canceled run never starts")

    handle = await never.trigger()
    run = await app.runs.cancel(handle.id)
    assert run.status is perdure.RunStatus.CANCELED
    async with testing.worker(app):
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=5)
    with pytest.raises(perdure.InvalidTransition, match="already canceled"):
        await app.runs.cancel(handle.id)


async def test_a_waiting_run_is_canceled_and_never_resumes(make_app):
    app = make_app(suspend_after=0.1)
    resumed: list[bool] = []

    @app.task(id="sleepy")
    async def sleepy() -> None:
        await perdure.sleep(0.5)
        resumed.append(True)

    async with testing.worker(app):
        handle = await sleepy.trigger()
        await until(lambda: _is(app, handle.id, perdure.RunStatus.WAITING))
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=5)
        await asyncio.sleep(0.6)  # past the sleep's deadline: it must not run on
    assert resumed == []


async def _is(app, run_id, status) -> bool:
    return (await app.runs.get(run_id)).status is status


async def test_a_running_run_gets_cancelled_error_and_may_clean_up(make_app):
    app = make_app()
    cleaned: list[str] = []
    started = asyncio.Event()

    @perdure.step
    async def long_step() -> None:
        started.set()
        await asyncio.sleep(30)

    @perdure.step
    async def release_hold(reason: str) -> str:
        cleaned.append(reason)
        return "released"

    @app.task(id="book")
    async def book() -> None:
        try:
            await long_step()
        except asyncio.CancelledError:
            await release_hold("canceled")  # compensation runs as a step
            raise
        await perdure.run_step("after", lambda: cleaned.append("never"))

    async with testing.worker(app):
        handle = await book.trigger()
        await asyncio.wait_for(started.wait(), 10)
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=10)
    assert cleaned == ["canceled"]
    names = [e.name for e in (await app.runs.trace(handle.id)).steps()]
    assert names == ["release_hold"]  # the canceled step recorded nothing


async def test_a_running_sync_step_finishes_and_is_recorded_but_not_returned(make_app):
    app = make_app()
    started = asyncio.Event()
    loop_holder: list[asyncio.AbstractEventLoop] = []
    after: list[str] = []

    @perdure.step
    def transfer() -> str:
        loop_holder[0].call_soon_threadsafe(started.set)
        time.sleep(0.4)
        return "sent"

    @app.task(id="pay")
    async def pay() -> None:
        await transfer()
        after.append("returned")

    async with testing.worker(app):
        loop_holder.append(asyncio.get_running_loop())
        handle = await pay.trigger()
        await asyncio.wait_for(started.wait(), 10)
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=10)
    assert after == []
    (entry,) = (await app.runs.trace(handle.id)).steps()
    assert entry.status.value == "completed" and entry.result == '"sent"'


async def test_code_that_ignores_cancellation_is_ended_after_the_grace_period(make_app):
    app = make_app(cancel_grace_seconds=0.3)
    started = asyncio.Event()

    @app.task(id="stubborn")
    async def stubborn() -> None:
        started.set()
        for _ in range(60):  # refuses to stop for a few seconds
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    async with testing.worker(app):
        handle = await stubborn.trigger()
        await asyncio.wait_for(started.wait(), 10)
        t0 = time.monotonic()
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=10)
        assert time.monotonic() - t0 < 5
