"""Tokens (DESIGN §2): human approval and other waits completed from outside the run."""

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


async def _waiting_token(app, run_id: str) -> perdure.TokenRecord | None:
    found = await app.tokens.list(run_id=run_id, status="waiting")
    return found[0] if found else None


async def test_an_approval_waits_for_its_token_and_gets_the_data(make_app):
    app = make_app(suspend_after=0.2)
    sent: list[str] = []

    @app.task(id="publish")
    async def publish(payload: dict) -> str:
        token = await perdure.create_token(timeout=60, tags=["approval"])
        await perdure.run_step("ask", lambda: sent.append(token.url) or token.id)
        decision = await perdure.wait_for_token(token)
        return f"{payload['post']}: {decision['verdict']}"

    async with testing.worker(app) as worker:
        handle = await publish.trigger({"post": "launch"})
        await until(lambda: _waiting_token(app, handle.id))
        token = await _waiting_token(app, handle.id)
        await until(lambda: _is(app, handle.id, perdure.RunStatus.WAITING))
        assert not worker.active  # waiting on a person costs the worker nothing
        assert token.tags == ["approval"] and token.url == sent[0]
        assert "/api/v1/tokens/" + token.id + "/callback/" in token.url
        record = await app.tokens.complete(token.id, {"verdict": "approved"})
        assert record.status is perdure.TokenStatus.COMPLETED
        assert await handle.result(timeout=10) == "launch: approved"
    assert len(sent) == 1


async def _is(app, run_id, status) -> bool:
    return (await app.runs.get(run_id)).status is status


async def test_a_token_completed_while_the_run_is_in_memory_wakes_it(make_app):
    app = make_app(suspend_after=30)

    @app.task(id="quick-approval")
    async def quick() -> dict:
        token = await perdure.create_token(timeout=20)  # nearer than suspend_after
        return await perdure.wait_for_token(token)

    async with testing.worker(app) as worker:
        handle = await quick.trigger()
        await until(lambda: _waiting_token(app, handle.id))
        assert handle.id in worker.active  # not suspended yet
        token = await _waiting_token(app, handle.id)
        await app.tokens.complete(token.id, {"ok": True})
        assert await handle.result(timeout=10) == {"ok": True}


async def test_completing_twice_unknown_or_timed_out_tokens_are_clear_errors(make_app):
    app = make_app(suspend_after=0.1)

    @app.task(id="short-wait")
    async def short_wait() -> str:
        token = await perdure.create_token(timeout=0.5)
        try:
            await perdure.wait_for_token(token)
        except perdure.WaitTimeout:
            return "timed out, handled"
        return "completed"

    @app.task(id="one-approval")
    async def one() -> dict:
        return await perdure.wait_for_token(await perdure.create_token())

    async with testing.worker(app):
        timing_out = await short_wait.trigger()
        assert await timing_out.result(timeout=10) == "timed out, handled"
        (expired,) = await app.tokens.list(run_id=timing_out.id)
        assert expired.status is perdure.TokenStatus.TIMED_OUT
        with pytest.raises(perdure.InvalidTransition, match="timed out"):
            await app.tokens.complete(expired.id, {})

        handle = await one.trigger()
        await until(lambda: _waiting_token(app, handle.id))
        token = await _waiting_token(app, handle.id)
        await app.tokens.complete(token.id, {"first": True})
        with pytest.raises(perdure.InvalidTransition, match="first completion wins"):
            await app.tokens.complete(token.id, {"second": True})
        assert await handle.result(timeout=10) == {"first": True}
    with pytest.raises(perdure.TokenNotFound):
        await app.tokens.complete("tok_nope", {})
    with pytest.raises(perdure.PayloadError):
        await app.tokens.complete(token.id, {"not json": {1, 2}})


async def test_a_token_keeps_its_identity_across_replays(make_app):
    app = make_app(suspend_after=0.1)
    ids: list[str] = []

    @app.task(id="stable", retry=perdure.Retry(max_attempts=2, min_delay=0, max_delay=0))
    async def stable() -> None:
        token = await perdure.create_token()
        ids.append(token.id)
        if len(ids) == 1:
            raise RuntimeError("replay after creating the token")
        await perdure.wait_for_token(token)

    async with testing.worker(app):
        handle = await stable.trigger()
        await until(lambda: _waiting_token(app, handle.id))
        await app.tokens.complete(ids[0], None)
        await handle.result(timeout=10)
    assert ids[0] == ids[1]
    assert len(await app.tokens.list(run_id=handle.id)) == 1


async def test_an_idempotency_key_shares_one_token(make_app):
    app = make_app()

    @app.task(id="shared")
    async def shared() -> str:
        return (await perdure.create_token(idempotency_key="deploy-42")).id

    async with testing.worker(app):
        first = await (await shared.trigger()).result(timeout=10)
        second = await (await shared.trigger()).result(timeout=10)
    assert first == second


async def test_canceling_a_run_cancels_its_waiting_tokens(make_app):
    app = make_app(suspend_after=0.1)

    @app.task(id="abandoned")
    async def abandoned() -> None:
        await perdure.wait_for_token(await perdure.create_token())

    async with testing.worker(app):
        handle = await abandoned.trigger()
        await until(lambda: _is(app, handle.id, perdure.RunStatus.WAITING))
        await app.runs.cancel(handle.id)
        with pytest.raises(perdure.RunCanceled):
            await handle.result(timeout=10)
    (token,) = await app.tokens.list(run_id=handle.id)
    assert token.status is perdure.TokenStatus.CANCELED


async def test_completion_data_must_fit_max_payload_bytes(make_app):
    app = make_app(max_payload_bytes=100, suspend_after=0.1)

    @app.task(id="small-approval")
    async def small() -> dict:
        return await perdure.wait_for_token(await perdure.create_token())

    async with testing.worker(app):
        handle = await small.trigger()
        await until(lambda: _waiting_token(app, handle.id))
        token = await _waiting_token(app, handle.id)
        with pytest.raises(perdure.PayloadError, match="max_payload_bytes=100"):
            await app.tokens.complete(token.id, {"notes": "x" * 200})
        assert (await app.tokens.get(token.id)).status is perdure.TokenStatus.WAITING
        await app.tokens.complete(token.id, {"ok": 1})
        assert await handle.result(timeout=10) == {"ok": 1}
