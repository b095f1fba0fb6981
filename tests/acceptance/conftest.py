"""Fixtures for tests that run real worker processes against a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import perdure
from perdure import testing
from tests.conftest import FAST_ENV

APP = "tests.acceptance.apps:app"
ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """Worker processes on one database, and a client App to watch them."""

    def __init__(self, tmp: Path, database_url: str) -> None:
        self.dir = tmp
        self.env = {
            **FAST_ENV,
            "PERDURE_DATABASE_URL": database_url,
            "PERDURE_TEST_DIR": str(tmp),
            "PYTHONPATH": str(ROOT),
        }
        self.client = perdure.App(database_url)
        from tests.acceptance import apps

        self.tasks = {task_id: task for task_id, task in apps.app.tasks.items()}
        self.processes: list[testing.WorkerProcess] = []

    def worker(self, **env: str) -> testing.WorkerProcess:
        process = testing.WorkerProcess(
            APP, env={**self.env, **env}, cwd=ROOT, log=self.dir / "workers.log"
        ).start()
        self.processes.append(process)
        return process

    async def trigger(self, task_id: str, payload: object = None) -> str:
        handle = await self.client.trigger(self.tasks[task_id], payload)
        return handle.id

    def effects(self, run_id: str | None = None) -> list[list[str]]:
        path = self.dir / "effects.log"
        lines = path.read_text().splitlines() if path.exists() else []
        rows = [line.split() for line in lines]
        return [r for r in rows if run_id is None or r[1] == run_id]

    def count(self, run_id: str | None = None) -> Counter[str]:
        return Counter(r[0] for r in self.effects(run_id))

    def release(self, name: str | None = None) -> None:
        (self.dir / ("release" if name is None else f"release-{name}")).touch()

    async def until(
        self,
        condition: Callable[[], Awaitable[bool] | bool],
        timeout: float = 20.0,
        what: str = "condition",
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if not isinstance(value, bool):
                value = await value
            if value:
                return
            if time.monotonic() > deadline:
                log = self.dir / "workers.log"
                tail = log.read_text()[-3000:] if log.exists() else ""
                raise AssertionError(f"{what} not met within {timeout}s; worker log:\n{tail}")
            await asyncio.sleep(0.02)

    async def run(self, run_id: str) -> perdure.Run:
        return await self.client.runs.get(run_id)

    async def steps(self, run_id: str) -> list[perdure.runs.Entry]:  # type: ignore[name-defined]
        return (await self.client.runs.trace(run_id)).steps()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def cluster(tmp_path: Path, database_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, database_url)
    try:
        yield c
    finally:
        c.stop()
