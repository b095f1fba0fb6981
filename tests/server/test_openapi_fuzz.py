"""Schemathesis against /openapi.json, in process through the ASGI app, on each backend:
whatever it sends, no answer is a 500, every answer has a status, content type and shape
the document gives, what the document calls valid is accepted, what it calls invalid is
refused, and every secured route refuses a request without the key.

It runs twice: with the ids it makes up (unknown tasks, runs and tokens), and with the
ids of a real task, a run waiting on a token, and that token's signed URL, so the
payloads, options, fork positions and token data it makes up reach the real code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
import schemathesis

import perdure
from perdure import testing
from perdure.server import create_app
from tests.conftest import FAST
from tests.server.conftest import KEY, until

SETTINGS: dict[str, Any] = {
    "generation": {"max-examples": 60},
    "max-stream-events": 1,
    "request-timeout": 10,
    "phases": {"stateful": {"enabled": False}},
    "auth": {"openapi": {"apiKey": {"bearer": KEY}}},
    "checks": {
        # The document cannot tie a task's payload type to the task id in the path:
        # a payload valid for the document may fail the task's own type hints (422).
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "401", "403", "404", "409", "422"],
        },
    },
}


class Order(pydantic.BaseModel):
    item: str
    quantity: int = 1


def _app(database_url: str) -> tuple[perdure.App, perdure.Task[Any, Any]]:
    app = perdure.App(database_url, **FAST)

    @app.task(id="approve")
    async def approve(payload: Order) -> str:
        token = await perdure.create_token(timeout=3600)
        decision = await perdure.wait_for_token(token)
        return f"{payload.item}: {decision}"

    return app, approve


async def _real_ids(app: perdure.App, task: perdure.Task[Any, Any]) -> dict[str, str]:
    """A run of the task, left waiting on its token; the path parameters naming them."""
    handle = await task.trigger({"item": "seed"})
    async with testing.worker(app):
        [token] = await until(lambda: app.tokens.list(run_id=handle.id))
    signature = token.url.rsplit("/", 1)[-1]
    return {
        "path.task_id": task.id,
        "path.run_id": handle.id,
        "path.token_id": token.id,
        "path.signature": signature,
    }


@pytest.fixture(params=["made-up-ids", "real-ids"])
def api_schema(request: pytest.FixtureRequest, database_url: str) -> Iterator[Any]:
    app, task = _app(database_url)
    settings = dict(SETTINGS)
    if request.param == "real-ids":
        settings["parameters"] = app.portal.run(_real_ids(app, task))
    app.portal.run(app.store())
    try:
        yield schemathesis.openapi.from_asgi(
            "/openapi.json",
            create_app(app, api_key=KEY),
            config=schemathesis.Config.from_dict(settings),
        )
    finally:
        app.portal.run(app.close())


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(600)
@schema.parametrize()
def test_the_api_keeps_the_promises_of_its_openapi_document(case: Any) -> None:
    case.call_and_validate()
