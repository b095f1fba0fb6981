"""A tiny app for the command-line tests; `perdure ... cliapp:app` imports it.

The tests put this directory on PYTHONPATH and set PERDURE_DATABASE_URL."""

from __future__ import annotations

import gc

import pydantic

import perdure

app = perdure.App()

not_an_app = 42


class Greeting(pydantic.BaseModel):
    name: str


@perdure.step(name="double")
async def double(n: int) -> int:
    return 2 * n


@app.task(id="echo")
async def echo(payload: dict[str, object]) -> dict[str, object]:
    return payload


@app.task(id="boom")
async def boom(payload: dict[str, object] | None = None) -> None:
    raise perdure.NonRetryableError("kaboom: the task gave up")


@app.task(id="heap")
async def heap() -> dict[str, int]:
    """What the worker process's garbage collector was told at start."""
    return {"frozen": gc.get_freeze_count()}


@app.task(id="typed")
async def typed(payload: Greeting) -> str:
    return f"hello {payload.name}"


@app.task(id="stepped")
async def stepped(payload: int) -> int:
    return await double(await double(payload)) + 1


@app.task(id="approve")
async def approve(payload: dict) -> str:
    token = await perdure.create_token(timeout=120)
    decision = await perdure.wait_for_token(token)
    return f"{payload['item']}: {decision['ok']}"
