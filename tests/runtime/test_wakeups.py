"""Wake-ups (DESIGN §5): work reaches an idle worker at once, not at its next poll."""

from __future__ import annotations

import asyncio

import perdure
from perdure import testing

POLL = 60.0  # far past every deadline below: only a wake-up can meet them


async def test_a_trigger_from_another_process_reaches_an_idle_worker_without_a_poll(make_app):
    app = make_app(poll_seconds=POLL)
    client = make_app(poll_seconds=POLL)  # its own store and connections, as another process

    @app.task(id="echo")
    async def echo(text: str) -> str:
        return text

    async with testing.worker(app):
        # One at a time, each into a worker that just went idle: a wake-up that arrives
        # while the worker is still looking for work must not be lost either.
        for n in range(20):
            handle = await client.trigger(echo, f"woken {n}")
            assert await handle.result(timeout=10) == f"woken {n}"


async def test_a_completed_token_wakes_its_suspended_run_without_a_poll(make_app):
    app = make_app(poll_seconds=POLL, suspend_after=0.0)
    client = make_app(poll_seconds=POLL)
    created: asyncio.Queue[str] = asyncio.Queue()

    @app.task(id="approve")
    async def approve() -> str:
        token = await perdure.create_token()
        created.put_nowait(token.id)  # outside the journal: again on a replay, harmlessly
        return str(await perdure.wait_for_token(token))

    async with testing.worker(app):
        handle = await client.trigger(approve, None)
        token_id = await asyncio.wait_for(created.get(), 10)
        async with asyncio.timeout(10):
            while (await client.runs.get(handle.id)).status is not perdure.RunStatus.WAITING:
                await asyncio.sleep(0.01)
        await client.tokens.complete(token_id, "yes")
        assert await handle.result(timeout=10) == "yes"
