"""The Python client refuses at trigger what the database cannot hold (a NUL character in a
string, a priority past PostgreSQL's INTEGER), as the API does at its boundary, rather
than failing in the database or, worse, poisoning later queries."""

from __future__ import annotations

import pytest

import perdure


async def test_a_tag_with_a_nul_character_is_refused_at_trigger(make_app):
    app = make_app()

    @app.task(id="t")
    async def t() -> None: ...

    # Accepted today; on PostgreSQL every later listing by tag then fails (jsonb cannot
    # hold \u0000), for as long as the run exists.
    with pytest.raises(perdure.PayloadError, match="tags"):
        await t.trigger(tags=["a\x00b"])
    assert await app.runs.list(tag="any") == []


async def test_an_idempotency_key_with_a_nul_character_is_refused_at_trigger(make_app):
    app = make_app()

    @app.task(id="t")
    async def t() -> None: ...

    with pytest.raises(perdure.PayloadError, match="idempotency_key"):
        await t.trigger(idempotency_key="order\x007")


async def test_a_priority_past_a_32_bit_integer_is_refused_at_trigger(make_app):
    app = make_app()

    @app.task(id="t")
    async def t() -> None: ...

    with pytest.raises(perdure.PayloadError, match="priority"):
        await t.trigger(priority=2**40)
