"""Errors as the API returns them: `{"error": {"type": ..., "message": ...}}` with a status
that says whose mistake it is. Bad input is a 4xx with one clear line; only a fault of
the server or its database is a 5xx, and its details go to the log, not to the caller."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from perdure import exceptions

log = logging.getLogger("perdure.server")

# A perdure error raised by a client call, and the status it means over HTTP.
_STATUS: list[tuple[type[Exception], int]] = [
    (exceptions.RunNotFound, 404),
    (exceptions.TokenNotFound, 404),
    (exceptions.InvalidTransition, 409),
    (exceptions.PayloadError, 422),
    (exceptions.StoreError, 503),
]
_HTTP_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    422: "InvalidRequest",
    503: "Unavailable",
}


class ApiError(Exception):
    """A request the API refuses: its status, a type name and one line for the caller."""

    def __init__(
        self, status: int, type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers


def body(type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": type, "message": message}}


def response(
    status: int, type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body(type, message), status_code=status, headers=headers)


def from_perdure(error: exceptions.PerdureError) -> ApiError:
    """The HTTP meaning of an error raised by an App call."""
    message = str(error)
    if isinstance(error, exceptions.PayloadError) and "max_payload_bytes" in message:
        return ApiError(413, "PayloadTooLarge", message)  # the size check of App.trigger
    for kind, status in _STATUS:
        if isinstance(error, kind):
            if status == 503:
                log.error("the store failed: %s", message)
                message = "the database is unavailable; try again"
            return ApiError(status, type(error).__name__, message)
    return ApiError(422, type(error).__name__, message)


async def on_api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return response(error.status, error.type, error.message, error.headers)


async def on_perdure_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, exceptions.PerdureError)
    return await on_api_error(request, from_perdure(error))


async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    kind = _HTTP_TYPES.get(error.status_code, "HTTPError")
    message = error.detail if error.detail else kind
    if error.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return response(error.status_code, kind, message, dict(error.headers or {}))


async def on_unexpected(request: Request, error: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return response(500, "InternalError", "the server failed; its log has the details")


HANDLERS = {
    ApiError: on_api_error,
    exceptions.PerdureError: on_perdure_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
