"""`perdure server` and `perdure dev` as real processes: they listen, print where, serve
the API (with or without a key), hand out token URLs that reach them, and stop on SIGTERM."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping

import httpx
import pytest

from tests.cli.conftest import APP, Cli, wait_for
from tests.cli.test_usage_errors import assert_usage_error

KEY = "cli-test-key"


class Served:
    """A `perdure server|dev` process and the base URL it printed."""

    def __init__(self, process: subprocess.Popen[str], url: str, lines: list[str]) -> None:
        self.process = process
        self.url = url
        self.lines = lines

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def _line_with(process: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """Stdout lines up to the one containing `marker`."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if marker in line:
                return lines
    raise AssertionError(f"no line with {marker!r} (exit {process.poll()}): {lines}")


@pytest.fixture
def start(cli: Cli) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, env: Mapping[str, str] | None = None, marker: str) -> Served:
        process = subprocess.Popen(
            [sys.executable, "-m", "perdure", *args],
            env={**cli.env, **(env or {})},
            cwd=cli.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        lines = _line_with(process, marker, 30)
        url = lines[-1].split(marker, 1)[1].split()[0].rstrip("/")
        return Served(process, url, lines)

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_perdure_server_serves_the_api_with_its_key_and_stops_on_sigterm(cli, start):
    served = start("server", APP, "--port", "0", env={"PERDURE_API_KEY": KEY}, marker=": ")
    assert served.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=served.url, timeout=10) as client:
        document = client.get("/openapi.json")
        assert document.status_code == 200 and "/api/v1/runs" in document.json()["paths"]
        assert client.get("/api/v1/runs").status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        triggered = client.post(
            "/api/v1/tasks/echo/trigger", json={"payload": {"a": 1}}, headers=auth
        )
        assert triggered.status_code == 201
    assert [r["id"] for r in cli.runs()] == [triggered.json()["id"]]
    assert served.stop() == 0


def test_perdure_server_without_an_api_key_says_how_to_set_one(cli):
    assert_usage_error(cli("server", APP), "PERDURE_API_KEY", "perdure dev")


def test_perdure_server_on_a_port_in_use_says_so_in_one_line(cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = cli("server", APP, "--port", port, env={"PERDURE_API_KEY": KEY})
    assert_usage_error(done, port, "--port")


def test_perdure_dev_serves_the_dashboard_without_a_key_and_token_urls_reach_it(cli, start):
    served = start("dev", APP, "--port", "0", marker="dashboard at ")
    assert served.lines[0].startswith("perdure dev: ") and "serving" in served.lines[0]
    assert served.url.startswith("http://127.0.0.1:")  # dev binds to this machine only
    with httpx.Client(base_url=served.url, timeout=10) as client:
        assert "<html" in client.get("/").text.lower()
        body = {"payload": {"item": "refund #7"}}
        run_id = client.post("/api/v1/tasks/approve/trigger", json=body).json()["id"]

        def token_url() -> str | None:
            tokens = client.get(f"/api/v1/runs/{run_id}/trace").json()["tokens"]
            return tokens[0]["url"] if tokens else None

        url = wait_for(token_url, what="the run's token")
        assert url.startswith(served.url + "/api/v1/tokens/")  # the URL points at this server
        assert httpx.post(url, json={"ok": True}, timeout=10).status_code == 200
        wait_for(
            lambda: client.get(f"/api/v1/runs/{run_id}").json()["status"] == "completed",
            what="the run completes",
        )
        assert client.get(f"/api/v1/runs/{run_id}").json()["output"] == "refund #7: True"
    assert served.stop() == 0
    shown = json.loads(cli.ok("runs", "show", run_id, "--json"))
    assert shown["run"]["status"] == "completed"
