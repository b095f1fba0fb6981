"""Durable sleeps and suspension (DESIGN §3): a run whose every branch waits past
suspend_after leaves worker memory and frees its slot."""

from __future__ import annotations

import asyncio
import gc
import math
import time
import weakref
from datetime import UTC, datetime, timedelta

import pytest

import perdure
from perdure import testing


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_long_sleep_suspends_the_run_and_frees_worker_memory(make_app):
    app = make_app(suspend_after=0.2)
    executions: list[weakref.ref] = []

    @app.task(id="nap")
    async def nap() -> str:
        before = perdure.now()
        await perdure.sleep(1.0)
        return f"slept {(perdure.now() - before).total_seconds():.1f}"

    async with testing.worker(app, concurrency=1) as worker:
        handle = await nap.trigger()

        async def waiting() -> bool:
            run = await app.runs.get(handle.id)
            if run.status is perdure.RunStatus.RUNNING and handle.id in worker.active:
                executions.append(weakref.ref(worker.active[handle.id]))
            return run.status is perdure.RunStatus.WAITING and not worker.active

        await until(waiting)
        gc.collect()
        assert all(ref() is None for ref in executions)  # nothing of it is left in memory
        assert await handle.result(timeout=10) == "slept 1.0"


async def test_a_suspended_run_frees_its_slot_for_other_runs(make_app):
    app = make_app(suspend_after=0.1)
    order: list[str] = []

    @app.task(id="sleeper", concurrency_limit=1, queue="one")
    async def sleeper() -> None:
        order.append("sleeper starts")
        await perdure.sleep(0.8)
        order.append("sleeper ends")

    @app.task(id="quick", queue="one")
    async def quick() -> None:
        order.append("quick runs")

    async with testing.worker(app, concurrency=1):
        first = await sleeper.trigger()
        await until(lambda: _status(app, first.id, perdure.RunStatus.WAITING))
        second = await quick.trigger()
        await second.result(timeout=10)
        await first.result(timeout=10)
    # quick ran while the sleeper waited (code before the sleep runs again on resume:
    # it is not a step)
    assert order[:2] == ["sleeper starts", "quick runs"] and order[-1] == "sleeper ends"


async def _status(app, run_id, status) -> bool:
    return (await app.runs.get(run_id)).status is status


async def test_a_short_sleep_stays_in_memory(make_app):
    app = make_app(suspend_after=5)

    @app.task(id="short")
    async def short() -> None:
        await perdure.sleep(0.3)

    async with testing.worker(app):
        handle = await short.trigger()
        await handle.result(timeout=10)
    statuses = [e.to_status for e in (await app.runs.trace(handle.id)).events]
    assert statuses == ["queued", "running", "completed"]


async def test_parallel_sleeps_suspend_once_every_branch_waits(make_app):
    app = make_app(suspend_after=0.2)
    woke: list[str] = []

    async def branch(name: str, seconds: float) -> None:
        await perdure.sleep(seconds)
        woke.append(name)
        await perdure.run_step(f"after {name}", lambda: name)

    @app.task(id="both")
    async def both() -> None:
        await asyncio.gather(branch("a", 0.6), branch("b", 0.9))

    async with testing.worker(app):
        handle = await both.trigger()
        await handle.result(timeout=10)
    trace = await app.runs.trace(handle.id)
    assert "waiting" in [e.to_status for e in trace.events]
    keys = sorted((e.key.branch, e.key.seq, e.name) for e in trace.entries)
    assert keys == [
        ("0.1", 1, "sleep"),
        ("0.1", 2, "after a"),
        ("0.2", 1, "sleep"),
        ("0.2", 2, "after b"),
    ]


@perdure.step(name="compute-sync")
def compute_sync() -> None:
    time.sleep(0.3)


async def _gathered() -> None:
    async def computing() -> None:
        await perdure.run_step("compute", asyncio.sleep, 0.3)

    await asyncio.gather(perdure.sleep(2.0), computing())


async def _future_awaited_after() -> None:
    sleeping = asyncio.ensure_future(perdure.sleep(2.0))
    await perdure.run_step("compute", asyncio.sleep, 0.3)
    await sleeping


async def _task_group() -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(perdure.sleep(2.0))
        await perdure.run_step("compute", asyncio.sleep, 0.3)


async def _operation_last() -> None:
    sleeping = asyncio.ensure_future(perdure.sleep(2.0))
    await perdure.run_step("compute", asyncio.sleep, 0.3)
    await perdure.create_token()  # a durable operation that does not wait
    await sleeping


async def _sync_step_beside() -> None:
    sleeping = asyncio.ensure_future(perdure.sleep(2.0))
    await compute_sync()
    await sleeping


@pytest.mark.parametrize(
    "body",
    [_gathered, _future_awaited_after, _task_group, _operation_last, _sync_step_beside],
    ids=lambda b: b.__name__,
)
async def test_a_run_suspends_once_the_step_its_other_branches_waited_beside_ends(make_app, body):
    """The last thing to happen is a step's end; the branch that ran it then ends or
    awaits the sleeping branch: the run is quiescent from there and suspends, without
    waiting for its sleep's deadline."""
    app = make_app(suspend_after=0.2)
    task = app.task(id="step-beside-wait")(body)

    async with testing.worker(app):
        handle = await task.trigger()
        deadline = asyncio.get_running_loop().time() + 1.6  # before the sleep's end
        while (await app.runs.get(handle.id)).status is not perdure.RunStatus.WAITING:
            assert asyncio.get_running_loop().time() < deadline, "the run did not suspend"
            await asyncio.sleep(0.01)
        await handle.result(timeout=10)


async def test_a_branch_still_computing_keeps_the_run_in_memory(make_app):
    app = make_app(suspend_after=0.1)

    @app.task(id="busy")
    async def busy() -> None:
        async def worker_branch() -> None:
            await perdure.run_step("compute", asyncio.sleep, 0.6)

        await asyncio.gather(perdure.sleep(0.4), worker_branch())

    async with testing.worker(app):
        handle = await busy.trigger()
        await handle.result(timeout=10)
    statuses = [e.to_status for e in (await app.runs.trace(handle.id)).events]
    assert "waiting" not in statuses


async def test_sleep_until_an_absolute_time_and_naive_datetimes_are_refused(make_app):
    app = make_app(suspend_after=0.1)
    errors: list[str] = []

    @app.task(id="until")
    async def until_task() -> float:
        try:
            await perdure.sleep_until(datetime.now() + timedelta(seconds=1))
        except perdure.PayloadError as error:
            errors.append(str(error))
        target = perdure.now() + timedelta(seconds=0.5)
        await perdure.sleep_until(target)
        return (perdure.now() - target).total_seconds()

    async with testing.worker(app):
        lateness = await (await until_task.trigger()).result(timeout=10)
    assert lateness >= 0
    assert errors and "timezone-aware" in errors[0]


async def test_a_sleep_without_end_suspends_until_canceled_and_nan_is_refused(make_app):
    app = make_app(suspend_after=0.1)
    errors: list[str] = []

    @app.task(id="forever")
    async def forever() -> None:
        try:
            await perdure.sleep(math.nan)
        except perdure.PayloadError as error:
            errors.append(str(error))
        await perdure.sleep(math.inf)

    async with testing.worker(app) as worker:
        handle = await forever.trigger()

        async def suspended() -> bool:
            run = await app.runs.get(handle.id)
            return run.status is perdure.RunStatus.WAITING and not worker.active

        await until(suspended)
        [sleep] = (await app.runs.trace(handle.id)).entries
        assert sleep.wake_at == math.inf
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=10)
    assert set(errors) == {"perdure.sleep takes a number of seconds, not nan"}  # each replay


async def test_a_def_task_sleeps_durably_too(make_app):
    app = make_app(suspend_after=0.1)

    @perdure.step
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(id="plain")
    def plain(payload: dict) -> int:
        total = add(payload["a"], 1)
        perdure.sleep(timedelta(seconds=0.4))
        return add(total, payload["b"])

    async with testing.worker(app):
        handle = await plain.trigger({"a": 1, "b": 2})
        assert await handle.result(timeout=10) == 4
    statuses = [e.to_status for e in (await app.runs.trace(handle.id)).events]
    assert "waiting" in statuses


async def test_delayed_trigger_waits_until_due(make_app):
    app = make_app()
    started: list[float] = []

    @app.task(id="later")
    async def later() -> None:
        started.append(time.monotonic())

    async with testing.worker(app):
        t0 = time.monotonic()
        handle = await later.trigger(delay=0.5)
        assert (await app.runs.get(handle.id)).status is perdure.RunStatus.DELAYED
        await handle.result(timeout=10)
    assert started[0] - t0 >= 0.5


async def test_sleep_takes_seconds_or_a_timedelta_only(make_app):
    app = make_app()

    @app.task(id="bad-sleep", retry=perdure.Retry(max_attempts=1))
    async def bad() -> None:
        await perdure.sleep("5 minutes")  # type: ignore[arg-type]

    async with testing.worker(app):
        with pytest.raises(perdure.RunFailed) as failed:
            await (await bad.trigger()).result(timeout=10)
    assert "seconds or a timedelta" in failed.value.error.message


async def test_durations_a_float_cannot_hold_are_refused_before_anything_is_written(make_app):
    app = make_app()

    @app.task(id="later")
    async def later() -> None:
        pass

    with pytest.raises(perdure.PayloadError, match=r"^delay takes a number of seconds, not nan$"):
        await later.trigger(delay=math.nan)
    with pytest.raises(perdure.PayloadError, match="a float holds"):
        await later.trigger(delay=10**400)
    assert await app.runs.list() == []


async def test_sleep_outside_a_task_is_a_clear_error():
    with pytest.raises(RuntimeError, match="outside a task run"):
        await perdure.sleep(1)
    assert perdure.now().tzinfo is UTC  # plain values outside a run


async def test_a_task_group_of_sleeping_branches_suspends_and_replays_per_branch(make_app):
    app = make_app(suspend_after=0.2)
    ran: list[str] = []

    async def branch(name: str, seconds: float) -> str:
        await perdure.run_step(f"before {name}", lambda: ran.append(name) or name)
        await perdure.sleep(seconds)
        return await perdure.run_step(f"after {name}", lambda: f"{name} done")

    @app.task(id="group")
    async def group() -> list[str]:
        async with asyncio.TaskGroup() as tasks:
            first = tasks.create_task(branch("x", 0.6))
            second = tasks.create_task(branch("y", 0.7))
        return [first.result(), second.result()]

    async with testing.worker(app):
        handle = await group.trigger()
        assert await handle.result(timeout=10) == ["x done", "y done"]
    trace = await app.runs.trace(handle.id)
    assert "waiting" in [e.to_status for e in trace.events]  # the parent did not pin it
    assert sorted(ran) == ["x", "y"]  # each "before" step ran once, across the suspension


@pytest.mark.parametrize("seconds", [0.2, 1.0], ids=["in-memory", "suspended"])
async def test_timers_never_fire_early_and_fire_soon_after_their_deadline(make_app, seconds):
    app = make_app(suspend_after=0.5)  # 0.2 s waits in memory; 1.0 s suspends
    lateness: list[float] = []

    @app.task(id="timer")
    async def timer() -> None:
        deadline = perdure.now() + timedelta(seconds=seconds)
        await perdure.sleep_until(deadline)
        woke = await perdure.run_step("woke", lambda: datetime.now(UTC).timestamp())
        lateness.append(woke - deadline.timestamp())

    async with testing.worker(app):
        handles = [await timer.trigger() for _ in range(5)]
        for handle in handles:
            await handle.result(timeout=15)
    assert min(lateness) >= 0  # never before the deadline
    assert max(lateness) < 2.0  # a generous bound; bench/ measures how prompt it really is


async def test_the_trace_shows_a_sleep_pending_until_its_deadline_and_over_after(make_app):
    app = make_app(suspend_after=0.0)

    @app.task(id="two-naps")
    async def two_naps() -> None:
        await perdure.sleep(0.01)
        await perdure.sleep(3600)

    async with testing.worker(app):
        handle = await two_naps.trigger()

        async def parked_on_the_long_nap() -> bool:
            trace = await app.runs.trace(handle.id)
            return trace.run.status is perdure.RunStatus.WAITING and len(trace.entries) == 2

        await until(parked_on_the_long_nap)
        short, long = (await app.runs.trace(handle.id)).entries
        assert short.status is perdure.runs.EntryStatus.COMPLETED
        assert short.finished_at == short.wake_at
        assert long.status is perdure.runs.EntryStatus.PENDING and long.finished_at is None
