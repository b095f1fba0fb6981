"""The ASGI app: the JSON API, the event stream, the OpenAPI document, metrics and the
dashboard, made from a `perdure.App`. It keeps nothing between requests but counters of
its own, so any number of servers can run against one database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from perdure import exceptions
from perdure.app import App
from perdure.server import access, api, dashboard, errors, events, metrics, openapi


def create_app(
    app: App,
    *,
    api_key: str | None = None,
    dev: bool = False,
    limits: events.Limits | None = None,
) -> Starlette:
    """The server of `app`. The API requires `api_key` (else the app's `api_key` setting,
    PERDURE_API_KEY) as a bearer token; with `dev=True` and no key it is open, for
    `perdure dev`, which binds to 127.0.0.1 only. `limits` bound the event streams."""
    key = api_key or app.settings.api_key
    if key is None and not dev:
        raise exceptions.ConfigurationError(
            "the server needs an API key: set PERDURE_API_KEY (clients send it as "
            "'Authorization: Bearer <key>'), or run `perdure dev`, which serves 127.0.0.1 only"
        )

    @contextlib.asynccontextmanager
    async def lifespan(server: Starlette) -> AsyncIterator[None]:
        await app.store()  # a bad database fails the start, in one line
        try:
            yield
        finally:
            server.state.streams.stopping = True

    server = Starlette(
        routes=routes(),
        middleware=[Middleware(access.RequireKey, key=key)],
        exception_handlers=errors.HANDLERS,
        lifespan=lifespan,
    )
    server.state.perdure = app
    server.state.streams = events.Streams(limits or events.Limits())
    server.state.checkpoint_probes = metrics.Histogram(metrics.PROBE_BUCKETS)
    return server


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(openapi.document())


def routes() -> list[BaseRoute]:
    post, get = ["POST"], ["GET"]
    api_routes = [
        Route("/tasks", api.list_tasks, methods=get),
        Route("/tasks/{task_id}/trigger", api.trigger, methods=post),
        Route("/runs", api.list_runs, methods=get),
        Route("/runs/{run_id}", api.get_run, methods=get),
        Route("/runs/{run_id}/trace", api.get_trace, methods=get),
        Route("/runs/{run_id}/cancel", api.cancel_run, methods=post),
        Route("/runs/{run_id}/retry", api.retry_run, methods=post),
        Route("/runs/{run_id}/replay", api.replay_run, methods=post),
        Route("/tokens/{token_id}/complete", api.complete_token, methods=post),
        Route("/tokens/{token_id}/callback/{signature}", api.token_callback, methods=post),
        Route("/queues", api.list_queues, methods=get),
        Route("/workers", api.list_workers, methods=get),
        Route("/events", events.stream, methods=get),
    ]
    return [
        # Mounted, so a wrong method on an API path is a 405, never the dashboard's page.
        Mount("/api/v1", routes=api_routes),
        Route("/openapi.json", openapi_document, methods=get),
        Route("/metrics", metrics.metrics, methods=get),
        Mount("/static", dashboard.files(), name="static"),
        Route("/", dashboard.index, methods=get),
        Route("/{path:path}", dashboard.page, methods=get),
    ]
