"""Settings: each an `App(...)` argument and a `PERDURE_*` environment variable. An argument
given in code wins; the variable fills in where the code gives none; then the default."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perdure import exceptions

DAY = 86400.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = "sqlite:///perdure.db"
    version: str | None = None
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    suspend_after: float = 5.0
    poll_seconds: float = 1.0
    max_recoveries: int = 5
    cancel_grace_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    pending_version_timeout: float = DAY
    idempotency_key_ttl: float = 30 * DAY
    max_payload_bytes: int = 10 * 1024 * 1024
    api_key: str | None = None
    secret_key: str | None = None
    public_url: str | None = None
    sqlite_synchronous: str = "full"
    worker_concurrency: int = 100

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_type(field.name, str(field.type), getattr(self, field.name))
        positive = (
            "lease_seconds",
            "heartbeat_seconds",
            "poll_seconds",
            "max_payload_bytes",
            "worker_concurrency",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise exceptions.ConfigurationError(f"{name} must be positive")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise exceptions.ConfigurationError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be shorter than "
                f"lease_seconds ({self.lease_seconds}), or live workers lose their runs"
            )


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _check_type(name: str, kind: str, value: Any) -> None:
    if value is None and "None" in kind:
        return
    if kind.startswith("float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        wanted = (
            "a finite number of seconds"
            if "seconds" in name
            or name in ("suspend_after", "pending_version_timeout", "idempotency_key_ttl")
            else "a number"
        )
    elif kind.startswith("int"):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        ok, wanted = isinstance(value, str), "a string"
    if not ok:
        raise exceptions.ConfigurationError(f"setting {name} must be {wanted}, not {value!r}")


def env_name(name: str) -> str:
    return f"PERDURE_{name.upper()}"


def _parse(name: str, text: str) -> Any:
    kind = FIELDS[name].type
    try:
        if kind in ("float", float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        if kind in ("int", int):
            return int(text)
    except ValueError:
        raise exceptions.ConfigurationError(
            f"{env_name(name)}={text!r} is not a finite number"
        ) from None
    return text


def resolve(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from code arguments (winning), then the environment, then defaults."""
    environ = os.environ if environ is None else environ
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise exceptions.ConfigurationError(
            f"unknown setting {sorted(unknown)[0]!r}; settings are: {', '.join(FIELDS)}"
        )
    values: dict[str, Any] = {}
    for name in FIELDS:
        if given.get(name) is not None:
            values[name] = given[name]
        elif environ.get(env_name(name)):
            values[name] = _parse(name, environ[env_name(name)])
    return Settings(**values)
