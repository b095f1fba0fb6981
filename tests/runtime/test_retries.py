"""Retries and ends (DESIGN §3): step and task retries, failures in the journal,
NonRetryableError, timeouts, max_duration."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

import perdure
from perdure import testing

QUICK = perdure.Retry(max_attempts=3, min_delay=0.01, max_delay=0.02)


class QuotaExceeded(Exception):
    def __init__(self, account: str, limit: int) -> None:
        super().__init__(account, limit)
        self.account = account
        self.limit = limit


async def test_a_step_is_retried_within_the_attempt_and_every_try_is_recorded(make_app):
    app = make_app()
    tries: list[float] = []

    @perdure.step(retry=perdure.Retry(max_attempts=4, min_delay=0.05, max_delay=0.05))
    def flaky() -> str:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise ConnectionError("reset by peer")
        return "ok"

    @app.task(id="flaky")
    async def task() -> str:
        return await flaky()

    async with testing.worker(app):
        handle = await task.trigger()
        assert await handle.result(timeout=10) == "ok"
    run = await app.runs.get(handle.id)
    assert run.attempts == 1  # the task itself did not retry
    (entry,) = (await app.runs.trace(handle.id)).steps()
    assert entry.attempts == 3
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(tries))


async def test_task_retry_keeps_the_journal_so_completed_steps_do_not_run_again(make_app):
    app = make_app()
    ran: list[str] = []

    def b() -> int:
        ran.append("b")
        if ran.count("b") == 1:
            raise ConnectionError("the first call of b fails")
        return 2

    @app.task(id="keeps", retry=perdure.Retry(max_attempts=2, min_delay=0.01, max_delay=0.01))
    async def keeps() -> int:
        a = await perdure.run_step("a", lambda: ran.append("a") or 1)
        return a + await perdure.run_step("b", perdure.step(retry=perdure.Retry(max_attempts=1))(b))

    async with testing.worker(app):
        handle = await keeps.trigger()
        assert await handle.result(timeout=10) == 3
    assert ran == ["a", "b", "b"]  # attempt 2 replayed a and ran b again
    assert (await app.runs.get(handle.id)).attempts == 2


async def test_a_failure_that_escaped_runs_the_step_again_but_a_caught_one_replays(make_app):
    app = make_app()
    calls = {"escaping": 0, "caught": 0}
    paths: list[str] = []

    @perdure.step(retry=perdure.Retry(max_attempts=1))
    def escaping() -> str:
        calls["escaping"] += 1
        if calls["escaping"] == 1:
            raise QuotaExceeded("acme", 10)
        return "second time lucky"

    @perdure.step(retry=perdure.Retry(max_attempts=1))
    def caught() -> str:
        calls["caught"] += 1
        raise QuotaExceeded("acme", 5)

    @app.task(id="paths", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def paths_task() -> str:
        try:
            await caught()
        except QuotaExceeded as error:  # the same type, live and on replay
            paths.append(f"caught {error.account} {error.limit}")
        return await escaping()

    async with testing.worker(app):
        assert await (await paths_task.trigger()).result(timeout=10) == "second time lucky"
    assert calls == {"escaping": 2, "caught": 1}
    assert paths == ["caught acme 5", "caught acme 5"]


async def test_an_exception_that_cannot_be_rebuilt_replays_as_step_failed(make_app):
    app = make_app()
    seen: list[str] = []

    class Local(Exception):  # not importable by module + name: cannot be rebuilt
        pass

    @perdure.step(retry=perdure.Retry(max_attempts=1))
    def odd() -> None:
        raise Local("strange")

    @app.task(id="odd", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def task() -> None:
        try:
            await odd()
        except Exception as error:
            seen.append(type(error).__name__)
            if isinstance(error, perdure.StepFailed):
                assert "strange" in error.message
        if len(seen) == 1:
            raise RuntimeError("replay")

    async with testing.worker(app):
        await (await task.trigger()).result(timeout=10)
    assert seen == ["Local", "StepFailed"]


async def test_non_retryable_error_fails_the_run_at_once(make_app):
    app = make_app()
    calls = {"n": 0}

    @perdure.step(retry=perdure.Retry(max_attempts=5, min_delay=0.01))
    def refuse() -> None:
        calls["n"] += 1
        raise perdure.NonRetryableError("card declined")

    @app.task(id="refuse", retry=QUICK)
    async def task() -> None:
        await refuse()

    async with testing.worker(app):
        handle = await task.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    assert calls["n"] == 1
    assert failed.value.error.type == "NonRetryableError"
    assert "card declined" in failed.value.error.message
    assert (await app.runs.get(handle.id)).attempts == 1


async def test_task_retries_back_off_and_end_failed_with_the_last_error(make_app):
    app = make_app()
    starts: list[float] = []

    @app.task(id="down", retry=perdure.Retry(max_attempts=3, min_delay=0.1, max_delay=1, factor=2))
    async def task() -> None:
        starts.append(time.monotonic())
        raise ValueError(f"attempt {len(starts)} failed")

    async with testing.worker(app):
        handle = await task.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.1  # min_delay, jitter never below it
    assert starts[2] - starts[1] >= 0.1
    assert failed.value.error.message == "attempt 3 failed"
    assert failed.value.error.traceback and "ValueError" in failed.value.error.traceback
    assert (await app.runs.get(handle.id)).status is perdure.RunStatus.FAILED


async def test_retry_after_on_an_error_sets_the_delay(make_app):
    app = make_app()
    starts: list[float] = []

    @app.task(id="429", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def task() -> str:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise perdure.PerdureError("rate limited", retry_after=0.3)
        return "ok"

    async with testing.worker(app):
        assert await (await task.trigger()).result(timeout=10) == "ok"
    assert starts[1] - starts[0] >= 0.3


async def test_async_step_timeout_is_recorded_as_that_steps_failure(make_app):
    app = make_app()

    @perdure.step(timeout=0.05, retry=perdure.Retry(max_attempts=2, min_delay=0.01))
    async def slow() -> None:
        await asyncio.sleep(5)

    @app.task(id="slow", retry=perdure.Retry(max_attempts=1))
    async def task() -> None:
        await slow()

    async with testing.worker(app):
        handle = await task.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    assert failed.value.error.type == "TimeoutError"
    (entry,) = (await app.runs.trace(handle.id)).steps()
    assert entry.attempts == 2 and entry.error["type"] == "TimeoutError"


async def test_a_sync_step_is_not_interrupted_and_its_timeout_applies_when_it_returns(make_app):
    app = make_app()
    finished: list[bool] = []

    @perdure.step(timeout=0.05, retry=perdure.Retry(max_attempts=1))
    def blocking() -> str:
        time.sleep(0.2)
        finished.append(True)
        return "late"

    @app.task(id="blocking", retry=perdure.Retry(max_attempts=1))
    async def task() -> None:
        await blocking()

    async with testing.worker(app):
        handle = await task.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    assert finished == [True]
    assert failed.value.error.type == "TimeoutError"
    assert "past its timeout" in failed.value.error.message


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (float("nan"), "takes a number of seconds, not nan"),
        (10**400, "takes a number of seconds a float holds"),
        ("5s", "takes seconds or a timedelta"),
    ],
    ids=["nan", "overflow", "text"],
)
def test_a_step_timeout_that_is_not_a_duration_is_refused_where_the_step_is_declared(
    timeout, message
):
    with pytest.raises(perdure.PayloadError, match=f"^timeout of step 'fetch' {message}"):

        @perdure.step(timeout=timeout)
        def fetch() -> None:
            pass


async def test_max_duration_ends_the_run_timed_out(make_app):
    app = make_app()

    @app.task(id="long", max_duration=0.2, retry=QUICK)
    async def task() -> None:
        await perdure.run_step("spin", asyncio.sleep, 5)

    async with testing.worker(app):
        handle = await task.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    run = await app.runs.get(handle.id)
    assert run.status is perdure.RunStatus.TIMED_OUT
    assert run.attempts == 1  # a timed-out run is not retried
    assert failed.value.error.type == "timed_out"


async def test_max_duration_does_not_count_durable_waits(make_app):
    app = make_app()

    @app.task(id="patient", max_duration=0.5)
    async def task() -> str:
        await perdure.sleep(1.0)  # longer than max_duration, but a wait
        return "done"

    async with testing.worker(app):
        assert await (await task.trigger()).result(timeout=10) == "done"


async def test_max_duration_does_not_count_a_wait_other_branches_are_left_in(make_app):
    """A step ends while another branch sleeps; the branch that ran it then awaits the
    sleeper: from there on the run only waits, and its clock stops."""
    app = make_app()

    @app.task(id="patient-beside", max_duration=1.0)
    async def task() -> str:
        sleeping = asyncio.ensure_future(perdure.sleep(2.0))
        await perdure.run_step("quick", asyncio.sleep, 0.1)
        await sleeping
        return "done"

    async with testing.worker(app):
        assert await (await task.trigger()).result(timeout=10) == "done"
