"""Fixtures for the command-line tests: `perdure` as a real process against a fresh SQLite
file, with the tiny app of `cliapp.py` importable, and a worker process when one is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from perdure.testing import WorkerProcess
from tests.conftest import FAST_ENV

HERE = Path(__file__).resolve().parent
APP = "cliapp:app"
TIMEOUT = 60  # seconds any one command may take, whatever goes wrong


class Cli:
    """Runs `python -m perdure ...` in a scratch directory on this test's database."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.database = home / "perdure.db"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PERDURE_")}
        self.env = {
            **inherited,
            **FAST_ENV,
            "PERDURE_DATABASE_URL": f"sqlite:///{self.database}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), inherited.get("PYTHONPATH")])),
        }
        self.workers: list[WorkerProcess] = []

    def __call__(
        self, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        merged = {**self.env, **(env or {})}
        final = {k: v for k, v in merged.items() if v is not None}
        return subprocess.run(
            [sys.executable, "-m", "perdure", *args],
            env=final,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, **options: Any) -> str:
        """Run a command that must succeed; its stdout."""
        done = self(*args, **options)
        assert done.returncode == 0, f"perdure {' '.join(args)}: {done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def runs(self) -> list[dict[str, Any]]:
        """`perdure runs list --json`, oldest first."""
        found: list[dict[str, Any]] = json.loads(self.ok("runs", "list", "--json"))
        return sorted(found, key=lambda r: (r["created_at"], r["id"]))

    def trigger(self, task: str, payload: str | None = None) -> str:
        """Start a run without waiting; its id."""
        args = ["trigger", task, "--app", APP]
        if payload is not None:
            args += ["--payload", payload]
        run_id = self.ok(*args).strip()
        assert run_id.startswith("run_"), run_id
        return run_id

    def worker(
        self, *, concurrency: int | None = None, env: Mapping[str, str] | None = None
    ) -> WorkerProcess:
        """Start `perdure worker cliapp:app`; stopped at the end of the test."""
        process = WorkerProcess(
            APP,
            env={**self.env, **(env or {})},
            cwd=self.home,
            concurrency=concurrency,
            log=self.home / f"worker-{len(self.workers)}.log",
        )
        self.workers.append(process)
        return process.start()

    def log(self, process: WorkerProcess) -> str:
        assert process.log_path is not None
        return process.log_path.read_text(errors="replace")

    def stop_workers(self) -> None:
        for process in self.workers:
            try:
                process.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            finally:
                process.stop()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    try:
        yield runner
    finally:
        runner.stop_workers()


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.05)
