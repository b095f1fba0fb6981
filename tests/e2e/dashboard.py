"""`perdure dev` on the research agent demo, for the browser tests and the screenshots:
a real process on a fresh SQLite file and a free port, with a small JSON client."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from tests.conftest import FAST_ENV

REPO = Path(__file__).resolve().parents[2]
APP = "examples.research_agent.app:app"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
API_KEY = "e2e-secret-key"
STORAGE_KEY = "perdure.apiKey"  # where the dashboard keeps the key (static/api.js)
TERMINAL = {"completed", "failed", "canceled", "timed_out", "expired"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class DevServer:
    """`perdure dev examples.research_agent.app:app`, stopped (with everything it
    started) by `stop()`. Its output goes to `home/dev.log`."""

    def __init__(self, home: Path, *, api_key: str | None = API_KEY) -> None:
        self.home = home
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "dev.log"
        self.process: subprocess.Popen[str] | None = None

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PERDURE_")}
        env = {
            **inherited,
            **FAST_ENV,
            "PERDURE_DATABASE_URL": f"sqlite:///{self.home / 'perdure.db'}",
            "RESEARCH_AGENT_MODEL": "scripted",
            "PYTHONPATH": str(REPO),
        }
        if self.api_key:
            env["PERDURE_API_KEY"] = self.api_key
        return env

    def start(self, timeout: float = 30) -> DevServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "perdure", "dev", APP, "--port", str(self.port)],
            cwd=REPO,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so stop() ends whatever it started too
        )
        assert self.process.stdout is not None
        lines = _lines(self.process.stdout, self.log)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"perdure dev did not start:\n{self.log.read_text()}")
            try:
                line = lines.get(timeout=0.2)  # its output is the clock of this wait
            except queue.Empty:
                continue
            if found := re.search(r"http://127\.0\.0\.1:(\d+)", line):
                self.url = f"http://127.0.0.1:{found.group(1)}"
        return self

    def _answers(self) -> bool:
        try:
            self.request("GET", "/api/v1/tasks", timeout=1)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        return True

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    # --- the HTTP API -------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def trigger(self, payload: Any, task: str = "research-agent", **options: Any) -> str:
        answer = self.request(
            "POST", f"/api/v1/tasks/{task}/trigger", {"payload": payload, "options": options}
        )
        run_id: str = answer["id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/api/v1/runs/{run_id}")
        return found

    def trace(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/api/v1/runs/{run_id}/trace")
        return found


def _lines(stream: IO[str], log: Path) -> queue.Queue[str]:
    """The process's output, line by line, copied to `log` as it comes."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        with log.open("a") as copy:
            for line in stream:
                copy.write(line)
                copy.flush()
                lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines
