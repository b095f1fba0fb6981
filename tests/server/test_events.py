"""The event stream (`GET /api/v1/events`), served by uvicorn and read as it arrives, on
each backend: one run's updates (metadata live, journal entries, logs, transitions), runs
matching a filter, and streams that end cleanly: on disconnect, after their time, at
shutdown, and past the number a server holds."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

import perdure
from perdure import testing
from perdure.server import events
from tests.server.conftest import AUTH, serving, stream, until


async def test_one_runs_stream_shows_metadata_live_then_its_steps_and_its_end(make_app):
    app = make_app()
    gate = asyncio.Event()

    @app.task(id="crawl")
    async def crawl(payload: int) -> int:
        perdure.metadata.set("progress", 0.5)
        perdure.logger.info("half way")
        await gate.wait()  # running, not durable: only the metadata shows progress
        total = await perdure.run_step("count", lambda: payload * 2)
        perdure.metadata.set("progress", 1.0)
        return total

    handle = await crawl.trigger(21)
    async with serving(app) as (url, _), stream(url, run_id=handle.id) as events_:
        first = await events_.until(lambda name, data: name == "run")
        assert (first["id"], first["status"]) == (handle.id, "queued")
        await events_.until(lambda name, data: name == "ready")
        async with testing.worker(app):
            live = await events_.until(
                lambda name, data: name == "run" and data["metadata"] == {"progress": 0.5}
            )
            assert live["status"] == "running"  # seen while the run is still going
            logs = [data["message"] for name, data in events_.events if name == "log"]
            assert logs == ["half way"]  # recorded with the metadata, sent before the run
            gate.set()
            done = await events_.until(
                lambda name, data: name == "run" and data["status"] == "completed"
            )
        assert (done["output"], done["metadata"]) == (42, {"progress": 1.0})
        # The step's entry came before the run it completed.
        [step] = [data for name, data in events_.events if name == "entry"]
        assert (step["run_id"], step["name"], step["result"]) == (handle.id, "count", 42)
        seen = [name for name, _ in events_.events]
        assert seen.index("entry") < len(seen) - 1 and seen[-1] == "run"
        assert {"transition", "attempts"} <= set(seen)


async def test_a_filtered_stream_sends_each_matching_run_as_it_changes(make_app):
    app = make_app()

    @app.task(id="wanted")
    async def wanted(payload: int) -> int:
        return payload

    @app.task(id="other")
    async def other(payload: int) -> int:
        return payload

    before = await wanted.trigger(1)
    async with serving(app) as (url, _), stream(url, task_id="wanted") as events_:
        assert (await events_.until(lambda name, data: name == "run"))["id"] == before.id
        await events_.until(lambda name, data: name == "ready")
        ignored = await other.trigger(2)
        fresh = await wanted.trigger(3)
        shown = await events_.until(lambda name, data: name == "run")
        assert (shown["id"], shown["status"]) == (fresh.id, "queued")
        async with testing.worker(app):
            finished = {
                (await events_.until(lambda n, d: n == "run" and d["status"] == "completed"))["id"]
                for _ in range(2)
            }
        assert finished == {before.id, fresh.id}
    assert ignored.id not in {data["id"] for name, data in events_.events if name == "run"}


async def test_a_stream_ends_cleanly_when_its_client_goes_away(make_app):
    app = make_app()

    @app.task(id="idle")
    async def idle() -> None: ...

    handle = await idle.trigger()
    async with serving(app) as (url, asgi):
        async with stream(url, run_id=handle.id) as events_:
            await events_.until(lambda name, data: name == "ready")
            assert asgi.state.streams.open == 1
        # Noticed at once, not at the next write (the poll goes on for nobody otherwise).
        await until(lambda: asyncio.sleep(0, asgi.state.streams.open == 0), timeout=5)


async def test_a_stream_is_bounded_in_time_and_in_number(make_app):
    app = make_app()
    limits = events.Limits(poll_seconds=0.05, max_seconds=0.5, max_streams=1, retry_ms=250)
    async with serving(app, limits=limits) as (url, _):
        started = time.monotonic()
        async with stream(url) as events_:
            await events_.until(lambda name, data: name == "ready")
            async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
                refused = await client.get("/api/v1/events")
            assert refused.status_code == 503
            assert refused.json()["error"]["type"] == "TooManyStreams"
            with pytest.raises(EOFError):  # the server ends the stream
                while True:
                    await events_.next(timeout=5)
        assert time.monotonic() - started < 5


async def test_shutting_the_server_down_ends_its_streams(make_app):
    app = make_app()
    limits = events.Limits(poll_seconds=0.05, max_seconds=3600)
    async with serving(app, limits=limits) as (url, asgi):
        client = httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30)
        response = await client.send(client.build_request("GET", "/api/v1/events"), stream=True)
        started = time.monotonic()
    # Leaving `serving` returned although the stream was open: it ended, not timed out.
    assert time.monotonic() - started < 3
    assert asgi.state.streams.open == 0
    await response.aclose()
    await client.aclose()


async def test_a_stream_of_an_unknown_run_is_a_404(make_app, api):
    response = await api(make_app()).get("/api/v1/events", params={"run_id": "run_nope"})
    assert response.status_code == 404 and response.json()["error"]["type"] == "RunNotFound"
