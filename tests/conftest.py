"""Shared fixtures: a fresh SQLite file per test and settings short enough for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import perdure
from tests import postgres

# Short timings so crash and wait tests finish quickly; each test may override.
FAST = {
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.2,
    "poll_seconds": 0.1,
    "suspend_after": 0.3,
    "cancel_grace_seconds": 2.0,
    "shutdown_grace_seconds": 5.0,
}
FAST_ENV = {f"PERDURE_{k.upper()}": str(v) for k, v in FAST.items()}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend: a SQLite file, or a PostgreSQL schema."""
    if request.param == "postgres":
        return postgres.fresh_url()
    return f"sqlite:///{tmp_path / 'perdure.db'}"


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_schemas() -> Iterator[None]:
    yield
    postgres.finish()


@pytest.fixture
async def make_app(database_url: str) -> AsyncIterator[Any]:
    """make_app(**settings) -> an App on this test's database with FAST settings; its
    connections are closed after the test."""
    apps: list[perdure.App] = []

    def make(**options: Any) -> perdure.App:
        app = perdure.App(database_url, **{**FAST, **options})
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()
