"""Fixtures for the server's tests: the ASGI app of a perdure App, called in process
through httpx (on each backend), and served by uvicorn for the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

import perdure
from perdure.server import create_app, serve

KEY = "test-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def client(app: perdure.App, **options: Any) -> httpx.AsyncClient:
    """An HTTP client of `create_app(app)` in process, sending the API key."""
    asgi = create_app(app, api_key=KEY, **options)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://testserver", headers=AUTH
    )


@pytest.fixture
async def api(make_app: Callable[..., perdure.App]) -> AsyncIterator[Callable[..., Any]]:
    """api(app) -> an httpx client of the app's server; closed after the test."""
    opened: list[httpx.AsyncClient] = []

    def make(app: perdure.App, **options: Any) -> httpx.AsyncClient:
        opened.append(client(app, **options))
        return opened[-1]

    yield make
    for c in opened:
        await c.aclose()


async def until(condition: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = await condition()
        if found:
            return found
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(app: perdure.App, **options: Any) -> AsyncIterator[tuple[str, Any]]:
    """The app's server on a free port of 127.0.0.1, served by uvicorn as `perdure
    server` serves it: (its base URL, the ASGI app)."""
    asgi = create_app(app, api_key=KEY, **options)
    async with serve.running(asgi, serve.bind("127.0.0.1", 0), access_log=False) as url:
        yield url, asgi


class Stream:
    """A client of the event stream: the events (name, data) read so far."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: list[tuple[str, Any]] = []
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        name, data = "", ""
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = line.removeprefix("data: ")
                elif not line and name:
                    self.events.append((name, json.loads(data)))
                    return self.events[-1]
        raise EOFError("the stream ended")

    async def until(self, wanted: Callable[[str, Any], bool], timeout: float = 10.0) -> Any:
        """Read events until one is wanted; its data."""
        deadline = time.monotonic() + timeout
        while True:
            name, data = await self.next(max(deadline - time.monotonic(), 0.01))
            if wanted(name, data):
                return data


@contextlib.asynccontextmanager
async def stream(url: str, **params: Any) -> AsyncIterator[Stream]:
    """GET /api/v1/events?params, read as it arrives."""
    async with (
        httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client,
        client.stream("GET", "/api/v1/events", params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)
