"""Bugs found while building the server, in code it does not own (the Python client's
App.trigger): values the API refuses at its boundary (a NUL character in a string, a
priority past PostgreSQL's INTEGER) pass the client's checks and fail in the database, or
worse, poison later queries. Each test says what should happen; each fails today."""

from __future__ import annotations

import pytest

import perdure

BUG = "App.trigger does not check strings for NUL nor priority against INTEGER (app.py)"


@pytest.mark.xfail(strict=True, reason=BUG)
async def test_a_tag_with_a_nul_character_is_refused_at_trigger(make_app):
    app = make_app()

    @app.task(id="t")
    async def t() -> None: ...

    # Accepted today; on PostgreSQL every later listing by tag then fails (jsonb cannot
    # hold \u0000), for as long as the run exists.
    with pytest.raises(perdure.PayloadError, match="tags"):
        await t.trigger(tags=["a\x00b"])
    assert await app.runs.list(tag="any") == []


@pytest.mark.xfail(strict=True, reason=BUG)
async def test_an_idempotency_key_with_a_nul_character_is_refused_at_trigger(make_app):
    app = make_app()

    @app.task(id="t")
    async def t() -> None: ...

    with pytest.raises(perdure.PayloadError, match="idempotency_key"):
        await t.trigger(idempotency_key="order\x007")


@pytest.mark.xfail(strict=True, reason=BUG)
async def test_a_priority_past_a_32_bit_integer_is_refused_at_trigger(make_app):
    app = make_app()

    @app.task(id="t")
    async def t() -> None: ...

    with pytest.raises(perdure.PayloadError, match="priority"):
        await t.trigger(priority=2**40)
