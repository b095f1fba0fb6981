"""Child runs (DESIGN §2, §3): trigger_and_wait, batches, fire-and-forget triggers,
cancellation trees."""

from __future__ import annotations

import asyncio
import time

import pydantic
import pytest

import perdure
from perdure import testing


class Chapter(pydantic.BaseModel):
    title: str
    words: int


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_parent_waits_for_a_child_and_gets_its_typed_output(make_app):
    app = make_app(suspend_after=0.2)

    @app.task(id="write-chapter")
    async def write_chapter(payload: dict) -> Chapter:
        await perdure.sleep(0.3)
        return Chapter(title=payload["title"], words=len(payload["title"]) * 100)

    @app.task(id="write-book")
    async def write_book(payload: dict) -> int:
        chapter = await write_chapter.trigger_and_wait({"title": payload["title"]})
        assert isinstance(chapter, Chapter)
        return chapter.words

    async with testing.worker(app):
        handle = await write_book.trigger({"title": "Durability"})
        assert await handle.result(timeout=10) == 1000
    (child,) = await app.runs.list(parent_id=handle.id)
    assert child.root_id == handle.id and child.task_id == "write-chapter"
    assert "waiting" in [e.to_status for e in (await app.runs.trace(handle.id)).events]


async def test_a_batch_returns_every_result_in_order_and_one_failure_loses_nothing(make_app):
    app = make_app(suspend_after=0.2)

    @app.task(id="square", retry=perdure.Retry(max_attempts=1))
    async def square(n: int) -> int:
        if n == 3:
            raise ValueError("three is unlucky")
        await perdure.sleep(0.1 * n)  # they finish in another order than they started
        return n * n

    @app.task(id="fan-out")
    async def fan_out(numbers: list[int]) -> list[object]:
        results = await square.batch_trigger_and_wait(numbers)
        return [r.output if r.ok else r.error.message for r in results]

    async with testing.worker(app):
        handle = await fan_out.trigger([4, 1, 3, 2])
        assert await handle.result(timeout=10) == [16, 1, "three is unlucky", 4]
    children = await app.runs.list(parent_id=handle.id)
    assert len(children) == 4 and all(c.root_id == handle.id for c in children)


async def test_a_failed_child_raises_child_run_failed_in_its_parent(make_app):
    app = make_app()

    @app.task(id="flaky-child", retry=perdure.Retry(max_attempts=1))
    async def flaky_child() -> None:
        raise perdure.NonRetryableError("no such customer")

    @app.task(id="careful-parent")
    async def careful_parent() -> str:
        try:
            await flaky_child.trigger_and_wait()
        except perdure.ChildRunFailed as failed:
            return f"{failed.error.type}: {failed.error.message}"
        return "unreachable"

    async with testing.worker(app):
        outcome = await (await careful_parent.trigger()).result(timeout=10)
    assert outcome == "NonRetryableError: no such customer"


async def test_a_child_is_created_once_per_journal_position_whatever_replays(make_app):
    app = make_app(suspend_after=0.1)
    started: list[str] = []

    @app.task(id="child")
    async def child(n: int) -> int:
        started.append(perdure.context().run_id)
        return n

    @app.task(id="parent", retry=perdure.Retry(max_attempts=3, min_delay=0, max_delay=0))
    async def parent() -> int:
        total = await child.trigger_and_wait(1)
        handle = await child.trigger(2)  # fire and forget, also durable
        await perdure.sleep(0.3)  # suspends: the body replays on resume
        if perdure.context().attempt < 3:
            raise RuntimeError("replay everything")
        return total + len(handle.id)

    async with testing.worker(app):
        result = await (await parent.trigger()).result(timeout=10)
    assert result == 1 + len(started[1])
    assert len(started) == len(set(started)) == 2  # two children, each ran once


async def test_a_waiting_parent_holds_no_slot_so_a_queue_of_one_cannot_deadlock(make_app):
    app = make_app(suspend_after=0.1)

    @app.task(id="leaf", queue="single", concurrency_limit=1)
    async def leaf(n: int) -> int:
        return n + 1

    @app.task(id="tree", queue="single")
    async def tree(n: int) -> int:
        if n == 0:
            return await leaf.trigger_and_wait(0)
        return await tree.trigger_and_wait(n - 1)  # every level waits on the same queue

    async with testing.worker(app):
        assert await (await tree.trigger(3)).result(timeout=20) == 1


async def test_a_def_task_waits_on_children_too(make_app):
    app = make_app(suspend_after=0.1)

    @app.task(id="double")
    def double(n: int) -> int:
        return 2 * n

    @app.task(id="sum-doubles")
    def sum_doubles(numbers: list[int]) -> int:
        return sum(r.unwrap() for r in double.batch_trigger_and_wait(numbers))

    async with testing.worker(app):
        assert await (await sum_doubles.trigger([1, 2, 3])).result(timeout=10) == 12


async def test_canceling_a_parent_cancels_its_children_and_a_canceled_child_fails_its_wait(
    make_app,
):
    app = make_app(suspend_after=0.1)
    seen: list[str] = []

    @app.task(id="slow-child")
    async def slow_child() -> None:
        await perdure.sleep(60)

    @app.task(id="parent-of-slow")
    async def parent_of_slow() -> None:
        await slow_child.trigger_and_wait()

    @app.task(id="watcher")
    async def watcher() -> str:
        try:
            await slow_child.trigger_and_wait()
        except perdure.ChildRunFailed as failed:
            seen.append(failed.error.type)
            return "child canceled"
        return "unreachable"

    async with testing.worker(app):
        parent = await parent_of_slow.trigger()
        await until(lambda: _children_waiting(app, parent.id))
        await app.runs.cancel(parent.id)
        with pytest.raises(perdure.RunCanceled):
            await parent.result(timeout=10)
        (child,) = await app.runs.list(parent_id=parent.id)
        assert child.status is perdure.RunStatus.CANCELED

        watching = await watcher.trigger()
        await until(lambda: _children_waiting(app, watching.id))
        (watched,) = await app.runs.list(parent_id=watching.id)
        await app.runs.cancel(watched.id)
        assert await watching.result(timeout=10) == "child canceled"
    assert seen == ["RunCanceled"]


async def _children_waiting(app, parent_id) -> bool:
    found = await app.runs.list(parent_id=parent_id)
    return bool(found) and all(c.status is perdure.RunStatus.WAITING for c in found)


async def test_an_empty_batch_returns_an_empty_list(make_app):
    app = make_app()

    @app.task(id="noop")
    async def noop(n: int) -> int:
        return n

    @app.task(id="empty")
    async def empty() -> int:
        return len(await noop.batch_trigger_and_wait([]))

    async with testing.worker(app):
        assert await (await empty.trigger()).result(timeout=10) == 0


async def test_a_bad_child_payload_fails_the_parent_at_the_call(make_app):
    app = make_app()

    @app.task(id="typed-child")
    async def typed_child(chapter: Chapter) -> str:
        return chapter.title

    @app.task(id="sloppy-parent", retry=perdure.Retry(max_attempts=3))
    async def sloppy_parent() -> None:
        await typed_child.trigger_and_wait({"title": "no word count"})

    async with testing.worker(app):
        handle = await sloppy_parent.trigger()
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    assert failed.value.error.type == "PayloadError" and "words" in failed.value.error.message
    assert await app.runs.list(parent_id=handle.id) == []
    assert (await app.runs.get(handle.id)).attempts == 1


async def test_parallel_waits_on_steps_sleeps_tokens_and_children_in_one_gather(make_app):
    app = make_app(suspend_after=0.2)

    @app.task(id="sub")
    async def sub(n: int) -> int:
        await perdure.sleep(0.2)
        return n + 100

    @app.task(id="everything")
    async def everything() -> list[object]:
        token = await perdure.create_token(timeout=30)

        async def slept() -> str:
            await perdure.sleep(0.4)
            return "slept"

        stepped, nap, data, one, batch = await asyncio.gather(
            perdure.run_step("step", lambda: "stepped"),
            slept(),
            perdure.wait_for_token(token),
            sub.trigger_and_wait(1),
            sub.batch_trigger_and_wait([2, 3]),
        )
        return [stepped, nap, data, one, [r.output for r in batch]]

    async with testing.worker(app):
        handle = await everything.trigger()
        await until(lambda: _token_of(app, handle.id))
        token = await _token_of(app, handle.id)
        await app.tokens.complete(token.id, {"approved": True})
        result = await handle.result(timeout=15)
    assert result == ["stepped", "slept", {"approved": True}, 101, [102, 103]]


async def _token_of(app, run_id):
    found = await app.tokens.list(run_id=run_id, status="waiting")
    return found[0] if found else None


async def test_a_run_still_queued_when_its_ttl_passes_ends_expired(make_app):
    app = make_app()

    @app.task(id="stale")
    async def stale() -> None: ...

    handle = await stale.trigger(ttl=0.2)  # no worker yet
    await asyncio.sleep(0.4)
    async with testing.worker(app):
        with pytest.raises(perdure.RunFailed) as failed:
            await handle.result(timeout=10)
    assert failed.value.error.type == "expired"
    assert (await app.runs.get(handle.id)).status is perdure.RunStatus.EXPIRED
