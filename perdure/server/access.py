"""Who may call the API: a bearer API key (`Authorization: Bearer <PERDURE_API_KEY>`) on
/api/... and /metrics. Exceptions: a token's callback URL, whose signature is its own
credential; the dashboard's shell (`/`, `/static/...`), which holds no data and asks for
the key itself; and the OpenAPI document. The event stream also takes the key as an
`access_token` query parameter, since a browser's EventSource cannot send headers."""

from __future__ import annotations

import hmac
import re
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from perdure.server import errors

_CALLBACK = re.compile(r"^/api/v1/tokens/[^/]+/callback/[^/]+$")
EVENTS_PATH = "/api/v1/events"


def guarded(path: str) -> bool:
    return (path.startswith("/api/") and not _CALLBACK.match(path)) or path == "/metrics"


class RequireKey:
    """ASGI middleware refusing guarded paths without the key (401). With no key (dev
    mode, bound to 127.0.0.1), everything is open."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = None if key is None else key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.key is None or not guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = _given_key(scope)
        if given is not None and hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        problem = "is missing" if given is None else "is not the server's"
        refusal = errors.response(
            401,
            "Unauthorized",
            f"the API key {problem}: send the header 'Authorization: Bearer <PERDURE_API_KEY>'",
            {"WWW-Authenticate": "Bearer"},
        )
        await refusal(scope, receive, send)


def _given_key(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, key = value.partition(b" ")
            return key.strip() if kind.lower() == b"bearer" else b""
    if scope["path"] == EVENTS_PATH:
        raw: bytes = scope.get("query_string", b"")
        query = parse_qs(raw.decode("latin-1"))
        if "access_token" in query:
            return query["access_token"][0].encode()
    return None
