"""What users need to test their own tasks (and what perdure's own tests use).

    async with perdure.testing.worker(app):
        handle = await my_task.trigger(payload)
        assert await handle.result(timeout=10) == expected

`worker` runs a real worker on the running event loop against the app's real store;
`WorkerProcess` runs `perdure worker` as a separate process that a test may SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from perdure.app import App
from perdure.worker import Worker


@contextlib.asynccontextmanager
async def worker(app: App, *, concurrency: int = 10) -> AsyncIterator[Worker]:
    """Run a worker on this event loop for the duration of the block; it shuts down
    gracefully at the end (steps in flight finish, runs are released)."""
    serving = Worker(app, concurrency=concurrency)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serving.run(stop))
    await _until(lambda: hasattr(serving, "loop") or task.done(), 10)
    if task.done():
        task.result()  # raise what made it fail to start
    try:
        yield serving
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=serving.settings.shutdown_grace_seconds + 10)


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


class WorkerProcess:
    """`perdure worker APP` in a child process, for crash tests: `kill()` is a SIGKILL."""

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        concurrency: int | None = None,
        cwd: str | Path | None = None,
        log: Path | None = None,
    ) -> None:
        self.app = app
        self.env = {**os.environ, **(env or {})}
        self.concurrency = concurrency
        self.cwd = cwd
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> WorkerProcess:
        command = [sys.executable, "-m", "perdure", "worker", self.app]
        if self.concurrency is not None:
            command += ["--concurrency", str(self.concurrency)]
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            command, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no release; its lock dies with it."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the graceful shutdown."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is not None and self._log not in (None, subprocess.DEVNULL):
                self._log.close()

    def stop(self) -> None:
        """End the process whatever its state (for test teardown)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
