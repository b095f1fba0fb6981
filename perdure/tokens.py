"""Tokens: waitpoints completed from outside the run (an API call, a webhook URL, the CLI,
the dashboard), such as a human approval. Domain values and URL signing; no I/O."""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from perdure import runs

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


class TokenStatus(enum.StrEnum):
    WAITING = "waiting"
    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"


@dataclass(frozen=True, kw_only=True)
class Token:
    """What `perdure.create_token()` returns: the id to complete it by, and a URL that
    completes it with the JSON body POSTed to it (the URL is its own credential)."""

    id: str
    url: str


@dataclass(frozen=True, kw_only=True)
class TokenRecord:
    """A token as `app.tokens.get` / `list` return it."""

    id: str
    url: str
    status: TokenStatus
    data: Any
    run_id: str | None
    tags: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    timeout_at: datetime | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None


def token_id(run_id: str, key: runs.Key) -> str:
    """The id of the token created at this journal key: the same on every replay."""
    digest = hashlib.sha256(f"{run_id}:{key.branch}:{key.seq}".encode()).hexdigest()
    return f"tok_{digest[:26]}"


def signature(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()[:40]


def url_for(base: str | None, secret: str, token: str) -> str:
    root = (base or DEFAULT_PUBLIC_URL).rstrip("/")
    return f"{root}/api/v1/tokens/{token}/callback/{signature(secret, token)}"


def verify(secret: str, token: str, given: str) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters (a forged URL's, say).
    return hmac.compare_digest(signature(secret, token).encode(), given.encode(errors="replace"))
