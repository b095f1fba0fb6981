"""The JSON API under /api/v1: each handler reads its input (`inputs`), makes one App
call, and shapes the answer (`shapes`). Errors raised by App calls become JSON errors in
`errors`. The handlers keep nothing between requests: any number of servers may serve
one database."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from perdure import exceptions, tokens
from perdure.app import App
from perdure.server import errors, inputs, payloads, shapes

WORKERS_ENDED_WITHIN = 3600.0  # seconds a stopped or dead worker stays on the list
MAX_CHILDREN = 1000  # child runs shown in a trace


def perdure_app(request: Request) -> App:
    found: App = request.app.state.perdure
    return found


def _id(request: Request, name: str) -> str:
    """A path parameter naming a run or a token. One with a NUL character names nothing
    (and PostgreSQL cannot even be asked about it)."""
    value: str = request.path_params[name]
    if "\x00" in value:
        kind = exceptions.RunNotFound if name == "run_id" else exceptions.TokenNotFound
        raise kind(f"no {name.removesuffix('_id')} has the id {value!r}")
    return value


def _body_limit(app: App) -> int:
    return app.settings.max_payload_bytes + inputs.ENVELOPE_BYTES


# --- tasks ----------------------------------------------------------------------------------


async def list_tasks(request: Request) -> JSONResponse:
    app = perdure_app(request)
    found = [payloads.describe(app.tasks[task_id]) for task_id in sorted(app.tasks)]
    return JSONResponse({"data": found})


async def trigger(request: Request) -> JSONResponse:
    app = perdure_app(request)
    task_id: str = request.path_params["task_id"]
    task = app.tasks.get(task_id)
    if task is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        message = f"no task {task_id!r} in this app (tasks: {known})"
        raise errors.ApiError(404, "TaskNotFound", message)
    body = inputs.fields(await inputs.read_json(request, _body_limit(app)), ("payload", "options"))
    options = inputs.trigger_options(body.get("options"))
    handle = await app.trigger(task, body.get("payload"), **options)
    return JSONResponse(
        {"id": handle.id, "is_cached": handle.is_cached},
        status_code=200 if handle.is_cached else 201,
    )


# --- runs -----------------------------------------------------------------------------------


async def list_runs(request: Request) -> JSONResponse:
    app = perdure_app(request)
    query = inputs.run_query(request)
    if query.impossible:
        return JSONResponse({"data": [], "next_cursor": None})
    # One more than asked: a next page is offered only when it holds something.
    found = await app.runs.list(**query.filters, limit=query.limit + 1, cursor=query.cursor)
    page, more = found[: query.limit], len(found) > query.limit
    return JSONResponse(
        {"data": [shapes.run(r) for r in page], "next_cursor": page[-1].id if more else None}
    )


async def get_run(request: Request) -> JSONResponse:
    app = perdure_app(request)
    return JSONResponse(shapes.run(await app.runs.get(_id(request, "run_id"))))


async def get_trace(request: Request) -> JSONResponse:
    app = perdure_app(request)
    return JSONResponse(await load_trace(app, _id(request, "run_id")))


async def load_trace(app: App, run_id: str) -> dict[str, Any]:
    """A run's trace as the API shapes it (the event stream sends its changes)."""
    trace = await app.runs.trace(run_id)
    children = await app.runs.list(parent_id=run_id, limit=MAX_CHILDREN)
    run_tokens = await app.tokens.list(run_id=run_id, limit=MAX_CHILDREN)
    return shapes.trace(trace, children, run_tokens)


async def cancel_run(request: Request) -> JSONResponse:
    app = perdure_app(request)
    run_id = _id(request, "run_id")
    inputs.fields(await inputs.read_json(request, inputs.ENVELOPE_BYTES), ())
    return JSONResponse(shapes.run(await app.runs.cancel(run_id)))


async def retry_run(request: Request) -> JSONResponse:
    app = perdure_app(request)
    run_id = _id(request, "run_id")
    inputs.fields(await inputs.read_json(request, inputs.ENVELOPE_BYTES), ())
    return JSONResponse(shapes.run(await app.runs.retry(run_id)))


async def replay_run(request: Request) -> JSONResponse:
    """A new run of the same task; with `payload`, a new payload; with `from_position`,
    a fork that keeps the journal entries committed before that position."""
    app = perdure_app(request)
    run_id = _id(request, "run_id")
    raw = await inputs.read_json(request, _body_limit(app))
    body = inputs.fields(raw, ("payload", "from_position"))
    position = inputs.position(body.get("from_position"))
    payload = body.get("payload")
    if payload is not None:
        original = await app.runs.get(run_id)
        if original.task_id not in app.tasks:
            raise errors.ApiError(
                422,
                "PayloadError",
                f"this server's app has no task {original.task_id!r} to validate a new "
                "payload with; replay without a payload, or serve the app that defines it",
            )
    handle = await app.runs.replay(run_id, payload, position)
    return JSONResponse({"id": handle.id}, status_code=201)


# --- tokens ---------------------------------------------------------------------------------


async def complete_token(request: Request) -> JSONResponse:
    app = perdure_app(request)
    token_id = _id(request, "token_id")
    body = inputs.fields(await inputs.read_json(request, _body_limit(app)), ("data",))
    record = await app.tokens.complete(token_id, body.get("data"))
    return JSONResponse(shapes.token(record))


async def token_callback(request: Request) -> JSONResponse:
    """The token's own URL: the signature is the credential, the JSON body the data."""
    app = perdure_app(request)
    token_id = _id(request, "token_id")
    signature: str = request.path_params["signature"]
    if not tokens.verify(await app.token_secret(), token_id, signature):
        message = "the signature does not match this token's URL"
        raise errors.ApiError(403, "InvalidSignature", message)
    data = await inputs.read_json(request, app.settings.max_payload_bytes)
    record = await app.tokens.complete(token_id, None if data is inputs.NO_BODY else data)
    return JSONResponse({"id": record.id, "status": record.status.value})


# --- queues and workers ---------------------------------------------------------------------


async def list_queues(request: Request) -> JSONResponse:
    db = await perdure_app(request).store()
    return JSONResponse({"data": [shapes.queue(q) for q in await db.queue_stats()]})


async def list_workers(request: Request) -> JSONResponse:
    db = await perdure_app(request).store()
    found = await db.list_workers(WORKERS_ENDED_WITHIN, inputs.MAX_LIMIT)
    now = await db.now()
    return JSONResponse({"data": [shapes.worker(w, now) for w in found]})
