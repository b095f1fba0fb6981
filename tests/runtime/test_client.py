"""The client side (DESIGN §2): triggers, payload errors, idempotency, replay and forks,
versions; and the cost of a checkpoint."""

from __future__ import annotations

import asyncio
import time

import pydantic
import pytest

import perdure
from perdure import testing


class Query(pydantic.BaseModel):
    topic: str
    depth: int = 1


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_bad_payload_is_refused_at_trigger_naming_the_field_and_creates_no_run(make_app):
    app = make_app()

    @app.task(id="search")
    async def search(query: Query) -> str:
        return query.topic

    with pytest.raises(perdure.PayloadError) as error:
        await search.trigger({"depth": "deep"})
    message = str(error.value)
    assert "payload of task 'search'" in message and "topic" in message
    with pytest.raises(perdure.PayloadError, match="field 'topic'"):
        await app.tasks["search"].trigger({"topic": ("a", "b")})
    assert await app.runs.list() == []
    async with testing.worker(app):
        handle = await search.trigger(Query(topic="durability"))
        assert await handle.result(timeout=10) == "durability"
        handle = await search.trigger({"topic": "dicts work too"})
        assert await handle.result(timeout=10) == "dicts work too"


async def test_an_oversized_payload_is_refused(make_app):
    app = make_app(max_payload_bytes=1000)

    @app.task(id="big")
    async def big(payload: dict) -> None: ...

    with pytest.raises(perdure.PayloadError, match="max_payload_bytes=1000"):
        await big.trigger({"blob": "x" * 2000})
    assert await app.runs.list() == []


async def test_a_step_result_json_cannot_carry_fails_that_step_naming_its_type(make_app):
    app = make_app()
    calls = {"n": 0}

    @perdure.step(retry=perdure.Retry(max_attempts=3, min_delay=0.01))
    def tags():  # no annotation: a set cannot come back from JSON as a set
        calls["n"] += 1
        return {"urgent", "billing"}

    @app.task(id="tags", retry=perdure.Retry(max_attempts=3, min_delay=0.01))
    async def task() -> None:
        await tags()

    async with testing.worker(app):
        handle = await task.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    assert failed.value.error.type == "PayloadError"
    assert "result of step 'tags'" in failed.value.error.message
    assert "set" in failed.value.error.message
    assert calls["n"] == 1  # retrying cannot help: no retry, of the step or the task


async def test_an_idempotency_key_returns_the_run_that_holds_it(make_app):
    app = make_app()

    @app.task(id="charge", retry=perdure.Retry(max_attempts=1))
    async def charge(payload: dict) -> str:
        if payload.get("fail"):
            raise ValueError("declined")
        return "charged"

    first = await charge.trigger({"order": 1}, idempotency_key="order-1")
    again = await charge.trigger({"order": 1}, idempotency_key="order-1")
    assert (again.id, again.is_cached, first.is_cached) == (first.id, True, False)
    other_task_key = await app.task(id="refund")(lambda: None).trigger(idempotency_key="order-1")
    assert other_task_key.id != first.id  # keys are scoped to the task

    failing = await charge.trigger({"fail": True}, idempotency_key="order-2")
    async with testing.worker(app):
        assert await first.result(timeout=10) == "charged"
        with pytest.raises(perdure.RunFailed):
            await failing.result(timeout=10)
    assert (await charge.trigger({}, idempotency_key="order-1")).id == first.id  # completed holds
    fresh = await charge.trigger({}, idempotency_key="order-2")  # a failed run frees it
    assert fresh.id != failing.id and not fresh.is_cached


async def test_replay_starts_a_new_run_and_a_fork_keeps_the_entries_before_its_position(make_app):
    app = make_app()
    ran: list[str] = []

    @app.task(id="three")
    async def three(payload: dict) -> list[int]:
        out = []
        for name in ("one", "two", "three"):
            out.append(await perdure.run_step(name, lambda n=name: ran.append(n) or payload["k"]))
        return out

    async with testing.worker(app):
        original = await three.trigger({"k": 1})
        assert await original.result(timeout=10) == [1, 1, 1]
        fresh = await app.runs.replay(original.id, payload={"k": 2})
        assert await fresh.result(timeout=10) == [2, 2, 2]
        fork = await app.runs.replay(original.id, payload={"k": 3}, from_position=["0", 3])
        assert await fork.result(timeout=10) == [1, 1, 3]  # steps 1-2 kept from the original
    assert ran == ["one", "two", "three"] * 2 + ["three"]
    assert fresh.id != original.id and (await app.runs.get(fork.id)).root_id == fork.id


async def test_a_run_keeps_the_version_it_started_with(make_app):
    v1, v2 = make_app(version="v1", suspend_after=0.1), make_app(version="v2")
    served: list[str] = []

    def register(app: perdure.App, version: str) -> None:
        @app.task(id="versioned")
        async def versioned() -> str:
            served.append(f"start {version}")
            await perdure.sleep(0.4)
            served.append(f"end {version}")
            return version

    register(v1, "v1")
    register(v2, "v2")

    async with testing.worker(v1):
        handle = await v1.tasks["versioned"].trigger()
        await until(lambda: _status(v1, handle.id, perdure.RunStatus.WAITING))
    assert (await v1.runs.get(handle.id)).version == "v1"
    async with testing.worker(v2):
        await asyncio.sleep(0.6)  # past the sleep's deadline: v2 must still not take it
        assert (await v1.runs.get(handle.id)).status is perdure.RunStatus.WAITING
    async with testing.worker(v1):
        assert await handle.result(timeout=10) == "v1"
    assert "start v2" not in served


async def _status(app, run_id, status) -> bool:
    return (await app.runs.get(run_id)).status is status


async def test_one_write_per_step_and_the_journal_read_once_per_execution(make_app):
    app = make_app()
    store = await app.store()
    calls = {"checkpoint": 0, "journal": 0}
    for name in calls:
        original = getattr(store, name)

        async def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return await _original(*args, **kwargs)

        setattr(store, name, counted)

    @app.task(id="ten")
    async def ten() -> int:
        total = 0
        for i in range(10):
            total += await perdure.run_step(f"s{i}", lambda i=i: i)
        return total

    async with testing.worker(app):
        assert await (await ten.trigger()).result(timeout=10) == 45
    assert calls == {"checkpoint": 10, "journal": 0}  # the journal comes with the claim


async def test_a_run_whose_outcome_could_not_be_recorded_is_handed_back_and_completes(make_app):
    app = make_app()
    store = await app.store()
    original_finish = store.finish
    failures = {"left": 1}
    ran: list[int] = []

    async def flaky_finish(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise perdure.StoreError("disk I/O error (injected)")
        return await original_finish(*args, **kwargs)

    store.finish = flaky_finish

    @app.task(id="steady")
    async def steady() -> int:
        return await perdure.run_step("once", lambda: ran.append(1) or 7)

    async with testing.worker(app):
        handle = await steady.trigger()
        assert await handle.result(timeout=10) == 7
    assert ran == [1]  # the second execution replayed the step
    statuses = [e.to_status for e in (await app.runs.trace(handle.id)).events]
    assert statuses == ["queued", "running", "queued", "running", "completed"]
