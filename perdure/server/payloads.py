"""What each task takes and returns, for `GET /api/v1/tasks`: the JSON schemas of its
payload and output from its type hints, and an example payload built from the schema
(defaults where the hints give them), which the dashboard's test page starts from."""

from __future__ import annotations

from typing import Any

import pydantic

from perdure.tasks import Task

JSON = dict[str, Any]
_MAX_DEPTH = 8  # a recursive model gets an example this deep at most
_SCALARS: JSON = {"string": "", "integer": 0, "number": 0, "boolean": False, "null": None}
_FORMATS: JSON = {"date-time": "2025-01-01T00:00:00Z", "date": "2025-01-01", "uuid": ""}


def describe(task: Task[Any, Any]) -> JSON:
    payload = schema_of(task.payload_codec.hint) if task.takes_payload else {"type": "null"}
    return {
        "id": task.id,
        "queue": task.queue,
        "concurrency_limit": task.concurrency_limit,
        "max_duration": task.max_duration,
        "retry": {
            "max_attempts": task.retry.max_attempts,
            "min_delay": task.retry.min_delay,
            "max_delay": task.retry.max_delay,
            "factor": task.retry.factor,
        },
        "takes_payload": task.takes_payload,
        "payload_schema": payload,
        "payload_example": example(payload),
        "output_schema": schema_of(task.output_codec.hint),
    }


def schema_of(hint: Any) -> JSON:
    """The JSON schema of a type hint; `{}` (any JSON) where pydantic cannot draw one."""
    try:
        schema: JSON = pydantic.TypeAdapter(hint).json_schema()
    except Exception:  # a hint pydantic validates but cannot describe (a callable, say)
        return {}
    return schema


def example(schema: JSON) -> Any:
    """A value the schema accepts, as a starting point to edit: its defaults where given,
    else empty strings, zeros, the first choice of an enum or union."""
    return _example(schema, schema.get("$defs", {}), 0)


def _example(schema: JSON, defs: JSON, depth: int) -> Any:
    if "default" in schema:
        return schema["default"]
    if "$ref" in schema:
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
        return _example(target, defs, depth + 1) if depth < _MAX_DEPTH else None
    for choice in ("const", "examples", "enum"):
        if choice in schema:
            value = schema[choice]
            return value if choice == "const" else (value[0] if value else None)
    for union in ("anyOf", "oneOf", "allOf"):
        options = [s for s in schema.get(union, []) if s.get("type") != "null"]
        if options:
            return _example(options[0], defs, depth)
    return _typed(schema, defs, depth)


def _typed(schema: JSON, defs: JSON, depth: int) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        if depth >= _MAX_DEPTH:
            return {}
        required = schema.get("required", [])
        properties = schema.get("properties", {})
        return {
            name: _example(sub, defs, depth + 1)
            for name, sub in properties.items()
            if name in required or "default" in sub
        }
    if kind == "array":
        return []
    if kind == "string" and schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    return _SCALARS.get(kind) if isinstance(kind, str) else None
