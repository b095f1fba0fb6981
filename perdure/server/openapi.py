"""The OpenAPI 3.1 document of the server (`GET /openapi.json`): every route, its
parameters, request body and responses. It names no task of the app (those are listed,
with their payload schemas, by `GET /api/v1/tasks`, behind the API key), so it may be
served to anyone. A test runs schemathesis against it: the handlers accept exactly what
it describes, and answer in the shapes it gives."""

from __future__ import annotations

import functools
from typing import Any

import perdure
from perdure.server import inputs

JSON = dict[str, Any]
EVENT_NAMES = (
    "run",
    "entry",
    "entry_removed",
    "log",
    "transition",
    "attempts",
    "ready",
    "error",
)
NO_NUL = r"^[^\u0000]*$"  # PostgreSQL cannot store the NUL character in text
ANY: JSON = {}  # any JSON value
TEXT: JSON = {"type": "string"}
SAFE_TEXT: JSON = {"type": "string", "pattern": NO_NUL}
TIME: JSON = {"type": "string", "format": "date-time"}
INT: JSON = {"type": "integer"}


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: JSON) -> JSON:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: JSON, *, closed: bool = False, optional: tuple[str, ...] = ()) -> JSON:
    """An object with these properties, all required except `optional`; `closed`
    refuses other properties (request bodies)."""
    schema: JSON = {"type": "object", "properties": properties}
    required = [name for name in properties if name not in optional]
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


def page(items: JSON) -> JSON:
    return obj({"data": array(items)})


# --- schemas ------------------------------------------------------------------------------

ERROR = obj({"error": obj({"type": TEXT, "message": TEXT})})
RUN_ERROR = obj({"type": TEXT, "message": TEXT, "traceback": nullable(TEXT)})
RUN = obj(
    {
        "id": TEXT,
        "task_id": TEXT,
        "status": {"type": "string", "enum": inputs.STATUSES},
        "payload": ANY,
        "output": ANY,
        "error": nullable(ref("RunError")),
        "attempts": INT,
        "tags": array(TEXT),
        "metadata": {"type": "object"},
        "parent_id": nullable(TEXT),
        "root_id": TEXT,
        "idempotency_key": nullable(TEXT),
        "version": nullable(TEXT),
        "queue": TEXT,
        "concurrency_key": nullable(TEXT),
        "priority": INT,
        "recoveries": INT,
        "created_at": TIME,
        "started_at": nullable(TIME),
        "finished_at": nullable(TIME),
    }
)
ENTRY = obj(
    {
        "key": {"type": "array", "minItems": 2, "maxItems": 3},
        "kind": {"enum": ["step", "sleep", "value", "token", "wait", "child", "batch"]},
        "name": TEXT,
        "status": {"enum": ["completed", "failed", "retrying", "pending"]},
        "result": ANY,
        "error": nullable(ref("RunError")),
        "attempts": INT,
        "attempt": INT,
        "started_at": nullable(TIME),
        "finished_at": nullable(TIME),
        "wake_at": nullable(TIME),
        "duration_ms": nullable({"type": "number"}),
        "token_id": nullable(TEXT),
        "child_run_ids": array(TEXT),
    }
)
ATTEMPT = obj(
    {
        "attempt": INT,
        "status": nullable(TEXT),
        "started_at": nullable(TIME),
        "finished_at": nullable(TIME),
        "error": nullable(ref("RunError")),
        "worker_ids": array(TEXT),
        "takeovers": INT,
    }
)
TRANSITION = obj(
    {
        "at": TIME,
        "from_status": nullable(TEXT),
        "to_status": TEXT,
        "attempt": INT,
        "worker_id": nullable(TEXT),
        "detail": nullable(TEXT),
    }
)
LOG = obj(
    {
        "at": TIME,
        "level": TEXT,
        "message": TEXT,
        "attempt": INT,
        "branch": nullable(TEXT),
        "seq": nullable(INT),
    }
)
TOKEN = obj(
    {
        "id": TEXT,
        "url": TEXT,
        "status": {"enum": ["waiting", "completed", "timed_out", "canceled"]},
        "data": ANY,
        "run_id": nullable(TEXT),
        "tags": array(TEXT),
        "idempotency_key": nullable(TEXT),
        "timeout_at": nullable(TIME),
        "created_at": nullable(TIME),
        "completed_at": nullable(TIME),
    }
)
TRACE = obj(
    {
        "run": ref("Run"),
        "attempts": array(ref("Attempt")),
        "entries": array(ref("Entry")),
        "waits": array(ref("Entry")),
        "children": array(ref("Run")),
        "tokens": array(ref("Token")),
        "events": array(ref("Transition")),
        "logs": array(ref("Log")),
    }
)
QUEUE = obj(
    {
        "name": TEXT,
        "limit": nullable(INT),
        "depth": INT,
        "running": INT,
        "waiting": INT,
        "delayed": INT,
    }
)
WORKER = obj(
    {
        "id": TEXT,
        "status": {"enum": ["live", "stopped", "dead"]},
        "hostname": TEXT,
        "pid": INT,
        "version": nullable(TEXT),
        "concurrency": INT,
        "runs_held": INT,
        "started_at": TIME,
        "heartbeat_at": TIME,
        "seconds_since_heartbeat": {"type": "number"},
        "stopped_at": nullable(TIME),
        "dead_at": nullable(TIME),
    }
)
TASK = obj(
    {
        "id": TEXT,
        "queue": TEXT,
        "concurrency_limit": nullable(INT),
        "max_duration": nullable({"type": "number"}),
        "retry": obj(
            {
                "max_attempts": INT,
                "min_delay": {"type": "number"},
                "max_delay": {"type": "number"},
                "factor": {"type": "number"},
            }
        ),
        "takes_payload": {"type": "boolean"},
        "payload_schema": {"type": "object"},
        "payload_example": ANY,
        "output_schema": {"type": "object"},
    }
)
OPTIONS = obj(
    {
        "idempotency_key": nullable(SAFE_TEXT),
        "delay": {"anyOf": [{"type": "number", "minimum": 0}, TIME, {"type": "null"}]},
        "ttl": nullable({"type": "number", "exclusiveMinimum": 0}),
        "tags": nullable(array(SAFE_TEXT)),
        "queue": nullable(SAFE_TEXT),
        "concurrency_key": nullable(SAFE_TEXT),
        "priority": nullable(
            {"type": "integer", "minimum": -inputs.INT32 - 1, "maximum": inputs.INT32}
        ),
    },
    closed=True,
    optional=inputs.OPTION_NAMES,
)
POSITION = {
    "type": "array",
    "prefixItems": [SAFE_TEXT, {"type": "integer", "minimum": 0, "maximum": inputs.INT32}],
    "minItems": 2,
    "maxItems": 2,
    "description": 'A journal key [branch, seq], e.g. ["0", 3]: the entries committed before '
    "it are copied into the new run (a fork).",
}
# One server-sent event (before OpenAPI 3.2, the schema of a stream describes each event).
EVENT = obj(
    {
        "event": {"enum": list(EVENT_NAMES)},
        "data": {"type": "string", "contentMediaType": "application/json"},
    }
)
SCHEMAS: JSON = {
    "Error": ERROR,
    "RunError": RUN_ERROR,
    "Run": RUN,
    "RunPage": obj({"data": array(ref("Run")), "next_cursor": nullable(TEXT)}),
    "Entry": ENTRY,
    "Attempt": ATTEMPT,
    "Transition": TRANSITION,
    "Log": LOG,
    "Token": TOKEN,
    "Trace": TRACE,
    "Queue": QUEUE,
    "Worker": WORKER,
    "Task": TASK,
    "TriggerOptions": OPTIONS,
    "TriggerRequest": obj(
        {"payload": ANY, "options": nullable(ref("TriggerOptions"))},
        closed=True,
        optional=("payload", "options"),
    ),
    "Triggered": obj({"id": TEXT, "is_cached": {"type": "boolean"}}),
    "ReplayRequest": obj(
        {"payload": ANY, "from_position": nullable(POSITION)},
        closed=True,
        optional=("payload", "from_position"),
    ),
    "Replayed": obj({"id": TEXT}),
    "CompleteRequest": obj({"data": ANY}, closed=True, optional=("data",)),
    "Completed": obj({"id": TEXT, "status": TEXT}),
    "Empty": {"type": "object", "additionalProperties": False},
}

# --- operations ---------------------------------------------------------------------------

_ERRORS = {
    400: "The body is not JSON, or a query parameter is invalid.",
    401: "The API key is missing or wrong.",
    403: "The signature does not match the token.",
    404: "No such task, run or token.",
    409: "The run or token is not in a state that allows this.",
    413: "The body is over the size limit (max_payload_bytes).",
    422: "The body has the wrong shape, or the payload fails the task's type hints.",
    503: "The database is unavailable, or the server holds too many event streams.",
}


def _json(schema: JSON, text: str) -> JSON:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[int, JSON], *errors: int) -> JSON:
    found = {str(status): response for status, response in ok.items()}
    for status in (*errors, 503):
        found[str(status)] = _json(ref("Error"), _ERRORS[status])
    return found


def _path(name: str, text: str) -> JSON:
    return {"name": name, "in": "path", "required": True, "schema": TEXT, "description": text}


def _query(name: str, schema: JSON, text: str) -> JSON:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


def _body(schema: JSON, text: str, *, required: bool = False) -> JSON:
    return {
        "required": required,
        "description": text,
        "content": {"application/json": {"schema": schema}},
    }


RUN_ID = _path("run_id", "The run's id (run_...).")
TOKEN_ID = _path("token_id", "The token's id (tok_...).")
RUN_FILTERS = [
    _query(
        "status",
        array({"type": "string", "enum": inputs.STATUSES}),
        "Runs with any of these statuses (repeat the parameter for several).",
    ),
    _query("task_id", TEXT, "Runs of this task."),
    _query("tag", TEXT, "Runs carrying this tag."),
    _query("parent_id", TEXT, "Child runs of this run."),
    _query("root_id", TEXT, "Runs of the tree started by this run."),
    _query("created_after", TIME, "Runs created at or after this moment."),
    _query("created_before", TIME, "Runs created before this moment."),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": inputs.MAX_LIMIT, "default": 50},
        "The most runs to return.",
    ),
    _query("cursor", TEXT, "The next_cursor of the previous page."),
]


def _operations() -> JSON:
    return {
        "/api/v1/tasks": {
            "get": {
                "operationId": "listTasks",
                "summary": "The app's tasks, with the JSON schema of each payload",
                "responses": _responses({200: _json(page(ref("Task")), "The tasks.")}, 401),
            }
        },
        "/api/v1/tasks/{task_id}/trigger": {
            "post": {
                "operationId": "triggerTask",
                "summary": "Start a run of a task (the options of the Python client)",
                "parameters": [_path("task_id", "The task's id.")],
                "requestBody": _body(ref("TriggerRequest"), "The payload and options."),
                "responses": _responses(
                    {
                        201: _json(ref("Triggered"), "A run was created."),
                        200: _json(ref("Triggered"), "The idempotency key's holder."),
                    },
                    400,
                    401,
                    404,
                    413,
                    422,
                ),
            }
        },
        "/api/v1/runs": {
            "get": {
                "operationId": "listRuns",
                "summary": "Runs matching every filter given, newest first",
                "parameters": RUN_FILTERS,
                "responses": _responses({200: _json(ref("RunPage"), "A page of runs.")}, 400, 401),
            }
        },
        "/api/v1/runs/{run_id}": {
            "get": {
                "operationId": "getRun",
                "summary": "A run",
                "parameters": [RUN_ID],
                "responses": _responses({200: _json(ref("Run"), "The run.")}, 401, 404),
            }
        },
        "/api/v1/runs/{run_id}/trace": {
            "get": {
                "operationId": "getTrace",
                "summary": "A run's attempts, journal entries, waits, children, tokens and logs",
                "parameters": [RUN_ID],
                "responses": _responses({200: _json(ref("Trace"), "The trace.")}, 401, 404),
            }
        },
        "/api/v1/runs/{run_id}/cancel": _steer(
            "cancelRun", "Cancel a run (a running one ends after its cleanup)"
        ),
        "/api/v1/runs/{run_id}/retry": _steer(
            "retryRun", "A failed, timed-out or canceled run: a new attempt on its journal"
        ),
        "/api/v1/runs/{run_id}/replay": {
            "post": {
                "operationId": "replayRun",
                "summary": "A new run of the same task: a new payload, a fork from a position",
                "parameters": [RUN_ID],
                "requestBody": _body(ref("ReplayRequest"), "What to change (all optional)."),
                "responses": _responses(
                    {201: _json(ref("Replayed"), "The new run.")}, 400, 401, 404, 409, 413, 422
                ),
            }
        },
        "/api/v1/tokens/{token_id}/complete": {
            "post": {
                "operationId": "completeToken",
                "summary": "Complete a waiting token with JSON data (the first completion wins)",
                "parameters": [TOKEN_ID],
                "requestBody": _body(ref("CompleteRequest"), "The data."),
                "responses": _responses(
                    {200: _json(ref("Token"), "The completed token.")},
                    400,
                    401,
                    404,
                    409,
                    413,
                    422,
                ),
            }
        },
        "/api/v1/tokens/{token_id}/callback/{signature}": {
            "post": {
                "operationId": "tokenCallback",
                "summary": "A token's URL: completes it with the JSON body (no API key: the "
                "signature is the credential)",
                "security": [],
                "parameters": [TOKEN_ID, _path("signature", "The signature in the URL.")],
                "requestBody": _body(ANY, "The data, any JSON."),
                "responses": _responses(
                    {200: _json(ref("Completed"), "The token is completed.")},
                    400,
                    403,
                    404,
                    409,
                    413,
                    422,
                ),
            }
        },
        "/api/v1/queues": {
            "get": {
                "operationId": "listQueues",
                "summary": "Queues: runs due (depth), running, suspended, not yet due; limit",
                "responses": _responses({200: _json(page(ref("Queue")), "The queues.")}, 401),
            }
        },
        "/api/v1/workers": {
            "get": {
                "operationId": "listWorkers",
                "summary": "Live workers and those that ended in the last hour",
                "responses": _responses({200: _json(page(ref("Worker")), "The workers.")}, 401),
            }
        },
        "/api/v1/events": {
            "get": {
                "operationId": "streamEvents",
                "summary": "Server-sent events of run updates: one run, or runs matching filters",
                "description": "Events: run, entry, entry_removed, log, transition, attempts "
                "(one run); run (filters); ready after the first snapshot; error. The API key "
                "may also be given as the access_token query parameter.",
                "parameters": [
                    _query("run_id", TEXT, "Follow this run (the filters are then ignored)."),
                    _query("access_token", TEXT, "The API key, for clients without headers."),
                    *RUN_FILTERS,
                ],
                "responses": _responses(
                    {
                        200: {
                            "description": "The stream.",
                            "content": {"text/event-stream": {"schema": EVENT}},
                        }
                    },
                    400,
                    401,
                    404,
                ),
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": _responses(
                    {
                        200: {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": TEXT}},
                        }
                    },
                    401,
                ),
            }
        },
    }


def _steer(operation: str, summary: str) -> JSON:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "parameters": [RUN_ID],
            "requestBody": _body(ref("Empty"), "Nothing, or an empty object."),
            "responses": _responses(
                {200: _json(ref("Run"), "The run.")}, 400, 401, 404, 409, 413, 422
            ),
        }
    }


@functools.cache
def document() -> JSON:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "perdure",
            "version": perdure.__version__,
            "description": "Durable execution for Python: trigger tasks, follow and steer "
            'runs, complete tokens. Errors are {"error": {"type", "message"}}.',
        },
        "security": [{"apiKey": []}],
        "paths": _operations(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "PERDURE_API_KEY (not required by `perdure dev`).",
                }
            },
        },
    }
