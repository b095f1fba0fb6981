"""Journal and replay (DESIGN §3): keys per branch, typed results, non-determinism."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

import perdure
from perdure import runs, testing


class Page(pydantic.BaseModel):
    url: str
    words: int


@dataclasses.dataclass
class Stamp:
    at: datetime
    label: str


async def test_gather_branches_replay_their_own_results(make_app):
    app = make_app()
    calls: list[str] = []
    attempts = {"n": 0}

    @perdure.step
    async def fetch(name: str, delay: float) -> str:
        calls.append(name)
        await asyncio.sleep(delay)
        return f"result of {name}"

    @app.task(id="fan", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def fan() -> list[str]:
        # The slow branch is spawned first but finishes last.
        results = await asyncio.gather(fetch("slow", 0.05), fetch("fast", 0.0))
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("fail after the gather, so attempt 2 replays it")
        return list(results)

    async with testing.worker(app):
        handle = await fan.trigger()
        assert await handle.result(timeout=10) == ["result of slow", "result of fast"]
    assert sorted(calls) == ["fast", "slow"]  # replay ran neither again
    trace = await app.runs.trace(handle.id)
    keys = {(e.key.branch, e.key.seq): e.result for e in trace.steps()}
    assert keys == {("0.1", 1): '"result of slow"', ("0.2", 1): '"result of fast"'}


async def test_results_come_back_as_their_annotated_types_live_and_on_replay(make_app):
    app = make_app()
    seen: list[tuple[type, type, type]] = []

    @perdure.step
    async def page() -> Page:
        return Page(url="https://example.org", words=120)

    @perdure.step
    def stamp() -> Stamp:
        return Stamp(at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), label="x")

    @perdure.step
    async def when() -> datetime:
        return datetime(2026, 5, 6, tzinfo=UTC)

    @app.task(id="typed", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def typed() -> str:
        p, s, w = await page(), await stamp(), await when()
        seen.append((type(p), type(s), type(w)))
        assert s.at.tzinfo is not None
        if len(seen) == 1:
            raise RuntimeError("again")
        return p.url

    async with testing.worker(app):
        assert await (await typed.trigger()).result(timeout=10) == "https://example.org"
    assert seen == [(Page, Stamp, datetime)] * 2


async def test_changed_code_fails_with_a_readable_nondeterminism_error_then_retry_resumes(make_app):
    app = make_app()
    variant = {"name": "a", "attempt": 0}
    ran: list[str] = []

    @app.task(id="drift", retry=perdure.Retry(max_attempts=3, min_delay=0, max_delay=0))
    async def drift() -> str:
        variant["attempt"] += 1
        first = await perdure.run_step(variant["name"], lambda: ran.append(variant["name"]) or 1)
        if variant["attempt"] == 1:
            variant["name"] = "b"  # a deploy changed the code between attempts
            raise RuntimeError("transient")
        return f"done {first}"

    async with testing.worker(app):
        handle = await drift.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
        error = failed.value.error
        assert error is not None and error.type == "NonDeterminismError"
        assert "['0', 1]" in error.message
        assert "step 'b'" in error.message and "step 'a'" in error.message
        run = await app.runs.get(handle.id)
        assert run.attempts == 2  # no further task retry after non-determinism

        variant["name"] = "a"  # the fix
        await app.runs.retry(handle.id)
        assert await handle.result(timeout=10) == "done 1"
    assert ran == ["a"]  # the recorded step never ran again


async def test_recorded_values_are_identical_on_replay(make_app):
    app = make_app()
    seen: list[tuple[datetime, float, str]] = []

    @app.task(id="values", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def values() -> None:
        at, r, u = perdure.now(), perdure.random(), perdure.uuid4()
        await perdure.run_step("use", lambda: str(u))
        seen.append((at, r, str(u)))
        if len(seen) == 1:
            raise RuntimeError("replay me")

    async with testing.worker(app):
        await (await values.trigger()).result(timeout=10)
    assert seen[0] == seen[1]
    assert seen[0][0].tzinfo is not None


async def test_an_added_random_call_does_not_shift_later_values(make_app):
    app = make_app()
    seen: list[str] = []
    extra = {"on": False}

    @app.task(id="shift", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def shift() -> None:
        if extra["on"]:
            perdure.random()  # new code adds a call before the uuid
        seen.append(str(perdure.uuid4()))
        await perdure.run_step("mark", lambda: 1)
        if len(seen) == 1:
            extra["on"] = True
            raise RuntimeError("replay with the new call")

    async with testing.worker(app):
        await (await shift.trigger()).result(timeout=10)
    assert seen[0] == seen[1]


async def test_a_durable_call_from_a_foreign_thread_is_refused(make_app):
    app = make_app()
    errors: list[str] = []

    @app.task(id="foreign")
    async def foreign() -> None:
        def other_thread() -> None:
            try:
                perdure.sleep(0.01)
            except RuntimeError as error:
                errors.append(str(error))

        thread = threading.Thread(target=other_thread)
        thread.start()
        await asyncio.to_thread(thread.join)
        try:
            await asyncio.to_thread(perdure.sleep, 0.01)
        except RuntimeError as error:
            errors.append(str(error))

    async with testing.worker(app):
        await (await foreign.trigger()).result(timeout=10)
    assert len(errors) == 2
    assert "outside a task run" in errors[0]
    assert "did not create" in errors[1]


def counted_step() -> tuple[Any, list[int]]:
    """A step `charge(n) -> n`, and the list of the n it was run with."""
    calls: list[int] = []

    @perdure.step
    async def charge(n: int) -> int:
        calls.append(n)
        return n

    return charge, calls


async def test_a_step_called_from_a_foreign_thread_is_refused_at_the_call(make_app):
    app = make_app()
    charge, calls = counted_step()

    @app.task(id="foreign-step")
    async def foreign() -> str:
        try:
            await asyncio.to_thread(charge, 1)  # the thread sees the run's context
        except RuntimeError as error:
            return str(error)
        return "no error"

    async with testing.worker(app):
        message = await (await foreign.trigger()).result(timeout=10)
    assert "did not create" in message and "step 'charge'" in message
    assert calls == []


async def test_a_step_called_from_a_loop_callback_is_refused_at_the_call(make_app):
    app = make_app()
    charge, calls = counted_step()

    @app.task(id="callback-step")
    async def from_callback() -> str:
        said: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def callback() -> None:  # runs in a copy of the body's context, in no task
            try:
                charge(1).close()
                said.set_result("no error")
            except RuntimeError as error:
                said.set_result(str(error))

        asyncio.get_running_loop().call_soon(callback)
        return await said

    async with testing.worker(app):
        message = await (await from_callback.trigger()).result(timeout=10)
    assert "did not create" in message and calls == []


async def test_a_step_awaited_by_a_task_the_run_did_not_create_is_refused(make_app):
    app = make_app()
    charge, calls = counted_step()

    @app.task(id="foreign-task-step")
    async def foreign_task() -> str:
        # Made without the loop's task factory: a task of no branch, in the body's context.
        task = asyncio.Task(charge(1), context=contextvars.copy_context())
        try:
            await task
        except RuntimeError as error:
            return str(error)
        return "no error"

    async with testing.worker(app):
        message = await (await foreign_task.trigger()).result(timeout=10)
    assert "did not create" in message and calls == []


async def test_a_resumed_run_replays_its_steps_off_the_rows_its_claim_read(make_app, monkeypatch):
    app = make_app(suspend_after=0.0)
    calls: list[int] = []
    made: list[str] = []  # the kind of each row made an entry

    @perdure.step
    async def charge(n: int) -> int:
        calls.append(n)
        return n

    @app.task(id="resumed")
    async def resumed() -> int:
        total = 0
        for n in range(5):
            total += await charge(n)
        await perdure.sleep(0.2)  # the run suspends, and its next claim reads its journal
        return total + await charge(10)

    entry_of = runs.entry_of

    def counted(row: Any) -> runs.Entry:
        made.append(row[4])
        return entry_of(row)

    monkeypatch.setattr(runs, "entry_of", counted)
    async with testing.worker(app):
        assert await (await resumed.trigger()).result(timeout=10) == 20
    assert calls == [0, 1, 2, 3, 4, 10]  # each step ran once
    assert "sleep" in made  # the resumed run matched its sleep on an entry made of a row
    assert "step" not in made  # and its five recorded steps on their rows alone


async def test_context_gives_ids_and_a_stable_step_key(make_app):
    app = make_app()
    keys: list[str | None] = []
    contexts: list[perdure.RunContext] = []

    @perdure.step
    def charge() -> str:
        keys.append(perdure.context().step_key)
        return "charged"

    @app.task(id="ctx", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def ctx() -> None:
        contexts.append(perdure.context())
        await charge()
        if len(contexts) == 1:
            raise RuntimeError("again")

    async with testing.worker(app):
        handle = await ctx.trigger(tags=["t1"], idempotency_key="k1")
        await handle.result(timeout=10)
    assert keys == [f"{handle.id}:0:1"]
    first, second = contexts
    assert (first.run_id, first.task_id, first.attempt, first.tags) == (handle.id, "ctx", 1, ["t1"])
    assert second.attempt == 2 and first.idempotency_key == "k1"
    assert first.step_key is None


async def test_logs_and_metadata_are_not_emitted_again_on_replay(make_app):
    app = make_app()
    tries = {"n": 0}

    @app.task(id="logs", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def logs() -> None:
        perdure.logger.info("before the step")
        perdure.metadata.set("progress", 0.5)
        await perdure.run_step("s", lambda: 1)
        tries["n"] += 1
        perdure.logger.info("after the step, try %d", tries["n"])
        if tries["n"] == 1:
            raise RuntimeError("again")

    async with testing.worker(app):
        handle = await logs.trigger()
        await handle.result(timeout=10)
    trace = await app.runs.trace(handle.id)
    assert [x.message for x in trace.logs] == [
        "before the step",
        "after the step, try 1",
        "after the step, try 2",
    ]
    assert trace.run.metadata == {"progress": 0.5}


async def test_a_nul_character_is_refused_in_a_step_name_and_replaced_in_a_log_line(make_app):
    """PostgreSQL's text holds no NUL (SQLite's does): a step named with one fails at
    once with a clear error on every backend, and a log line keeps the rest of its text."""
    app = make_app()
    errors: list[str] = []

    @app.task(id="nul")
    async def nul() -> str:
        perdure.logger.info("a\x00b")
        try:
            await perdure.run_step("a\x00b", lambda: 1)
        except perdure.PayloadError as error:
            errors.append(str(error))
        return await perdure.run_step("ab", lambda: "done")

    async with testing.worker(app):
        handle = await nul.trigger()
        assert await handle.result(timeout=10) == "done"
    assert [x.message for x in (await app.runs.trace(handle.id)).logs] == ["a\ufffdb"]
    assert errors and "NUL character" in errors[0]
