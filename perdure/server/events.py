"""`GET /api/v1/events`: server-sent events of run updates, for the dashboard and for a
user's own front end.

Being stateless, the server polls the store (every `poll_seconds`) and sends what changed
since the last look. `?run_id=` follows one run: the run (and its children) as `run`
events, new or changed journal entries as `entry`, removed ones as `entry_removed`, new
logs as `log`, new status transitions as `transition`, and the attempts as `attempts`.
Without it, the newest `limit` runs matching the runs filters, each as a `run` event when
it changes. The first look sends everything, then `ready`. Within one look, a run comes
after its entries, logs and transitions: a client that sees it completed has them. Metadata set with
`perdure.metadata.set` is part of the run, so it appears as the worker records it.

A stream is bounded: it ends after `max_seconds` (the browser's EventSource reconnects,
after the `retry` delay the stream announced), when the client goes away (noticed at
once, not at the next write), or when the server shuts down; a server holds at most
`max_streams` at once. A comment line every `keepalive_seconds` keeps proxies from
closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from perdure import exceptions
from perdure.app import App
from perdure.server import api, errors, inputs, shapes

log = logging.getLogger("perdure.server")
Event = tuple[str, Any]


@dataclass(frozen=True, kw_only=True)
class Limits:
    poll_seconds: float = 0.5
    keepalive_seconds: float = 15.0
    max_seconds: float = 300.0
    max_streams: int = 100
    retry_ms: int = 1000


@dataclass
class Streams:
    """The event streams of one server process."""

    limits: Limits
    open: int = 0
    stopping: bool = False  # set at shutdown: every stream ends at its next look


class Source(Protocol):
    async def look(self) -> list[Event]:
        """What changed since the last look (everything, the first time)."""


async def stream(request: Request) -> Response:
    app = api.perdure_app(request)
    streams: Streams = request.app.state.streams
    run_id = request.query_params.get("run_id")
    source: Source
    if run_id is not None:
        await app.runs.get(_run_id(run_id))  # 404 now rather than an empty stream
        source = OneRun(app, run_id)
    else:
        source = ManyRuns(app, inputs.run_query(request))
    if streams.open >= streams.limits.max_streams:
        raise errors.ApiError(
            503, "TooManyStreams", "this server has as many event streams open as it allows"
        )
    return EventStream(source, streams)


def _run_id(value: str) -> str:
    if "\x00" in value:
        raise exceptions.RunNotFound(f"no run has the id {value!r}")
    return value


def encode(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class EventStream(Response):
    """A text/event-stream response that polls its source until it ends."""

    media_type = "text/event-stream"

    def __init__(self, source: Source, streams: Streams) -> None:
        self.source = source
        self.streams = streams
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.streams.open += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            pump = asyncio.ensure_future(self._pump(send))
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                await asyncio.wait([pump, gone], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, gone):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError):
                        await task
        finally:
            self.streams.open -= 1

    async def _pump(self, send: Send) -> None:
        limits = self.streams.limits
        started = quiet_since = time.monotonic()
        await _chunk(send, f"retry: {limits.retry_ms}\n\n".encode())
        first, going = True, True
        while going and not self.streams.stopping:
            if time.monotonic() - started >= limits.max_seconds:
                break
            found, going = await self._look()
            if first:
                found, first = [*found, ("ready", {})], False
            for name, data in found:
                await _chunk(send, encode(name, data))
            if found:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= limits.keepalive_seconds:
                await _chunk(send, b": keepalive\n\n")
                quiet_since = time.monotonic()
            await asyncio.sleep(limits.poll_seconds)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _look(self) -> tuple[list[Event], bool]:
        """What changed, and whether the stream goes on."""
        try:
            return await self.source.look(), True
        except exceptions.RunNotFound as error:  # deleted meanwhile
            return [("error", {"type": "RunNotFound", "message": str(error)})], False
        except exceptions.StoreError as error:  # passing, perhaps: look again
            log.warning("event stream: the store failed: %s", error)
            return [("error", {"type": "Unavailable", "message": "the database failed"})], True


async def _chunk(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# --- sources ------------------------------------------------------------------------------


@dataclass
class ManyRuns:
    """The newest runs matching a filter; a `run` event for each one that changed."""

    app: App
    query: inputs.RunQuery
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def look(self) -> list[Event]:
        if self.query.impossible:
            return []
        q = self.query
        found = await self.app.runs.list(**q.filters, limit=q.limit, cursor=q.cursor)
        # Oldest first, as they happened.
        return _changed_runs([shapes.run(r) for r in reversed(found)], self.seen)


def _changed_runs(current: list[dict[str, Any]], seen: dict[str, dict[str, Any]]) -> list[Event]:
    """The runs that differ from what was sent; `seen` keeps only the current ones."""
    changed: list[Event] = [("run", run) for run in current if seen.get(run["id"]) != run]
    seen.clear()
    seen.update((run["id"], run) for run in current)
    return changed


@dataclass
class OneRun:
    """One run's trace, sent as what changed in it; its children's runs too."""

    app: App
    run_id: str
    seen_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: int = 0
    transitions: int = 0
    fingerprint: tuple[Any, ...] | None = None
    has_children: bool = False

    async def look(self) -> list[Event]:
        db = await self.app.store()
        run = shapes.run(await self.app.runs.get(self.run_id))
        fingerprint = await db.trace_fingerprint(self.run_id)
        if fingerprint == self.fingerprint:
            children = await self._children() if self.has_children else []
            return _changed_runs([*children, run], self.seen_runs)
        self.fingerprint = fingerprint
        trace = await api.load_trace(self.app, self.run_id)
        self.has_children = bool(trace["children"])
        found = self._entries(trace["entries"])
        found += [("log", line) for line in trace["logs"][self.logs :]]
        found += [("transition", t) for t in trace["events"][self.transitions :]]
        if len(trace["events"]) != self.transitions:
            found.append(("attempts", {"run_id": self.run_id, "attempts": trace["attempts"]}))
        self.logs, self.transitions = len(trace["logs"]), len(trace["events"])
        # The runs last: a client that sees a run completed has its entries already.
        return found + _changed_runs([*trace["children"], trace["run"]], self.seen_runs)

    async def _children(self) -> list[dict[str, Any]]:
        found = await self.app.runs.list(parent_id=self.run_id, limit=api.MAX_CHILDREN)
        return [shapes.run(r) for r in found]

    def _entries(self, current: list[dict[str, Any]]) -> list[Event]:
        changed: list[Event] = []
        keys = set()
        for entry in current:
            key = json.dumps(entry["key"])
            keys.add(key)
            if self.entries.get(key) != entry:
                self.entries[key] = entry
                changed.append(("entry", {"run_id": self.run_id, **entry}))
        for key in sorted(set(self.entries) - keys):
            del self.entries[key]
            changed.append(("entry_removed", {"run_id": self.run_id, "key": json.loads(key)}))
        return changed
