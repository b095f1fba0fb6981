"""Shared fixtures: a fresh SQLite file per test and settings short enough for tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import perdure

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


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'perdure.db'}"


@pytest.fixture
def make_app(database_url: str) -> Iterator[Any]:
    """make_app(**settings) -> an App on this test's database with FAST settings."""
    apps: list[perdure.App] = []

    def make(**options: Any) -> perdure.App:
        app = perdure.App(database_url, **{**FAST, **options})
        apps.append(app)
        return app

    yield make
