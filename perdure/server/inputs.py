"""Reading what a request carries: a JSON body under a size limit, the options of a
trigger, the filters of a run listing. Anything that does not fit the OpenAPI document
is refused here, with the field it concerns: 400 for what cannot be read, 422 for a value
of the wrong shape, 413 for a body over the limit."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request

from perdure import runs
from perdure.server import errors

# Room for the envelope around a payload (`{"payload": ..., "options": {...}}`).
ENVELOPE_BYTES = 64 * 1024
MAX_LIMIT = 1000
INT32 = 2**31 - 1  # PostgreSQL's INTEGER, the column of a run's priority
STATUSES = [s.value for s in runs.RunStatus]
_LEAP_SECOND = re.compile(r"(T\d\d:\d\d):60")
_INTEGER = re.compile(r"-?[0-9]+")


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


NO_BODY: Any = _NoBody()  # what read_json returns for an empty body (JSON null is None)


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body (NO_BODY when it has no bytes); 413 past `limit` bytes, 400
    when it is not JSON. NaN and Infinity are not JSON and are refused too."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:  # blanks are not JSON: they are refused below
        return NO_BODY
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as error:
        message = f"the body is not valid JSON: {error}"
        raise errors.ApiError(400, "MalformedJSON", message) from None


def _too_large(size: int, limit: int) -> errors.ApiError:
    return errors.ApiError(
        413,
        "PayloadTooLarge",
        f"the body is {size} bytes or more, over the limit of {limit} "
        "(max_payload_bytes plus room for the options)",
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large for a float")
    return value


def fields(body: Any, allowed: tuple[str, ...], where: str = "the body") -> dict[str, Any]:
    """The body as an object with only the `allowed` fields (all optional); no body at
    all is an empty object."""
    if body is NO_BODY:
        return {}
    if not isinstance(body, dict):
        raise invalid(where, f"must be a JSON object, not {_kind(body)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(
            f"{where}: field '{unknown[0]}'", f"is not known (fields: {', '.join(allowed)})"
        )
    return body


def invalid(field: str, problem: str) -> errors.ApiError:
    return errors.ApiError(422, "InvalidRequest", f"{field} {problem}")


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


# --- trigger options ----------------------------------------------------------------------


def trigger_options(value: Any) -> dict[str, Any]:
    """The `options` of a trigger, checked and ready for `App.trigger`."""
    given = {} if value is None else fields(value, OPTION_NAMES, "options")
    options: dict[str, Any] = {}
    for name in ("idempotency_key", "queue", "concurrency_key"):
        if given.get(name) is not None:
            options[name] = text(given[name], f"options.{name}")
    if given.get("tags") is not None:
        tags = given["tags"]
        if not isinstance(tags, list):
            raise invalid("options.tags", f"must be an array of strings, not {_kind(tags)}")
        options["tags"] = [text(tag, f"options.tags[{i}]") for i, tag in enumerate(tags)]
    if given.get("priority") is not None:
        options["priority"] = integer(given["priority"], "options.priority", -INT32 - 1, INT32)
    if given.get("delay") is not None:
        options["delay"] = _delay(given["delay"])
    if given.get("ttl") is not None:
        options["ttl"] = seconds(given["ttl"], "options.ttl")
        if options["ttl"] <= 0:
            raise invalid("options.ttl", "must be more than 0 seconds")
    return options


OPTION_NAMES = (
    "idempotency_key",
    "delay",
    "ttl",
    "tags",
    "queue",
    "concurrency_key",
    "priority",
)


def text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise invalid(field, f"must be a string, not {_kind(value)}")
    if "\x00" in value:
        raise invalid(field, "must not contain the character NUL (\\u0000)")
    return value


def integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, f"must be an integer, not {_kind(value)}")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}, not {value}")
    return value


def seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(field, f"must be a number of seconds, not {_kind(value)}")
    if value < 0:
        raise invalid(field, f"must not be negative, not {value}")
    return float(value)


def _delay(value: Any) -> float | datetime:
    """Seconds from now, or a moment (an ISO 8601 date-time with its offset)."""
    if isinstance(value, str):
        return moment(value, "options.delay", invalid)
    return seconds(value, "options.delay")


def moment(value: str, field: str, refuse: Any) -> datetime:
    """An RFC 3339 date-time, which must say its offset from UTC."""
    try:
        # Python has no leap seconds: 23:59:60 is read as 23:59:59.
        found = datetime.fromisoformat(_LEAP_SECOND.sub(r"\1:59", value.strip().upper()))
    except ValueError:
        raise refuse(field, f"must be an ISO 8601 date-time, not {value!r}") from None
    if found.tzinfo is None:
        raise refuse(field, f"must give its offset from UTC (e.g. a trailing Z): {value!r}")
    return found


# --- run listings --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunQuery:
    """The filters of `GET /api/v1/runs` (and of the event stream), as `app.runs.list`
    takes them. `impossible`: a filter no stored run can match (a NUL character)."""

    filters: dict[str, Any]
    limit: int
    cursor: str | None
    impossible: bool = False


def run_query(request: Request, default_limit: int = 50) -> RunQuery:
    params = request.query_params
    statuses = params.getlist("status")
    for status in statuses:
        if status not in STATUSES:
            raise bad_param("status", f"must be one of {', '.join(STATUSES)}, not {status!r}")
    filters: dict[str, Any] = {"status": statuses or None}
    for name in ("task_id", "tag", "parent_id", "root_id"):
        filters[name] = params.get(name)
    for name in ("created_after", "created_before"):
        given = params.get(name)
        filters[name] = None if given is None else moment(given, name, bad_param)
    limit = params.get("limit")
    cursor = params.get("cursor")
    texts = [v for v in (*filters.values(), cursor) if isinstance(v, str)]
    return RunQuery(
        filters=filters,
        limit=default_limit if limit is None else _limit(limit),
        cursor=cursor,
        impossible=any("\x00" in v for v in texts),
    )


def _limit(value: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise bad_param("limit", f"must be an integer, not {value!r}")
    number = int(value)
    if not 1 <= number <= MAX_LIMIT:
        raise bad_param("limit", f"must be between 1 and {MAX_LIMIT}, not {number}")
    return number


def bad_param(name: str, problem: str) -> errors.ApiError:
    return errors.ApiError(400, "InvalidParameter", f"query parameter {name} {problem}")


def position(value: Any) -> list[Any] | None:
    """A fork position: a journal key `[branch, seq]`."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
        raise invalid(
            "from_position", f'must be a journal key [branch, seq] such as ["0", 3], not {value!r}'
        )
    return [text(value[0], "from_position[0]"), integer(value[1], "from_position[1]", 0, INT32)]
