"""What every driver shares: paths, child processes, /proc readings, statistics, and the
one line a driver process prints its result on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULT_MARK = "BENCH-RESULT "
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- processes -----------------------------------------------------------------------


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every process the bench starts: this tree's perdure and bench
    first on the path, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


class Process:
    """A process the bench started, its output in a log file; `kill()` is a SIGKILL."""

    def __init__(
        self, command: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.command = list(command)
        self.log = log
        self.env = child_env(env)
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.command[:4]} exited; its log:\n{self.tail()}")

    def kill(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL when it has not exited in `timeout` seconds."""
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.01
) -> Any:
    """Poll `condition` until it returns something truthy; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A fresh directory on disk (not tmpfs: fsync must cost what it costs)."""
    base = Path(os.environ.get("BENCH_TMP", tempfile.gettempdir()))
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-", dir=base))
    try:
        yield path
    finally:
        if not os.environ.get("BENCH_KEEP"):
            subprocess.run(["rm", "-rf", str(path)], check=False)


# --- /proc ---------------------------------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """Resident set size now (VmRSS) and at its peak (VmHWM), in bytes."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return {"rss": found["VmRSS"], "hwm": found["VmHWM"]}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


async def idle_gap(params: Mapping[str, Any]) -> None:
    """W3's pause before each trigger: random (uniform in [0, gap)), so that a trigger
    lands at any phase of a system's polling cycle instead of locking to one."""
    await asyncio.sleep(gap_seconds(params))


def gap_seconds(params: Mapping[str, Any]) -> float:
    return random.uniform(0, float(params.get("gap", 0.05)))


# --- statistics ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was measured."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [1000 * s for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "min_ms": min(ms),
    }


# --- results -------------------------------------------------------------------------


def emit(result: Mapping[str, Any]) -> None:
    """A driver's result: one marked JSON line on stdout, read by the orchestrator."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def read_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return dict(json.loads(line[len(RESULT_MARK) :]))
    return None


def append_line(path: str, text: str) -> None:
    """A line appended by a step (W4): one write, no fsync (the bookkeeping must outlive
    a SIGKILL of the process, not of the machine)."""
    with open(path, "a") as f:
        f.write(text + "\n")


def read_lines(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
