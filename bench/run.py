"""The benchmark run: perdure beside DBOS, Restate and Temporal on workloads W0–W8
(shared/BENCHMARKS.md), in one run, on one machine.

    python -m bench [--quick] [--reps N] [--only W1,W3] [--systems perdure,dbos]
                    [--backends sqlite,postgres] [--json PATH] [--no-install]

Installs the peers first (bench/install.py). Each repetition runs every selected system
once, in an order rotated per repetition (so drift hits all alike); a peer's server runs
only while that peer is measured. Each measurement is a process of its own (bench/driver.py)
with a fresh database. Prints one table of medians (min–max) with the perdure/peer ratios and
perdure's targets, and writes the raw results as JSON (and the table as Markdown beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common, install, pg, report, servers

SYSTEMS = ["floor", "perdure", "dbos", "restate", "temporal"]
WORKLOADS = ["W0", "W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]
BACKENDS = ["sqlite", "postgres"]

# which workloads each system runs, and on which backends (None: the peer's own server)
PLAN: dict[str, list[tuple[str, list[str | None]]]] = {
    "floor": [("W0", ["sqlite", "postgres"]), ("W3", ["sqlite", "postgres"])],
    "perdure": [
        ("W1", ["sqlite", "postgres"]),
        ("W2", ["sqlite", "postgres"]),
        ("W3", ["sqlite", "postgres"]),
        ("W4", ["sqlite", "postgres"]),
        ("W5", ["sqlite", "postgres"]),
        ("W6", ["sqlite", "postgres"]),
        ("W7", ["postgres"]),
        ("W8", ["sqlite", "postgres"]),
    ],
    "dbos": [
        ("W1", ["sqlite", "postgres"]),
        ("W2", ["sqlite", "postgres"]),
        ("W3", ["sqlite", "postgres"]),
        ("W3-direct", ["sqlite", "postgres"]),
        ("W4", ["sqlite", "postgres"]),
        ("W5", ["sqlite", "postgres"]),
    ],
    "restate": [("W1", [None]), ("W2", [None]), ("W3", [None]), ("W4", [None])],
    "temporal": [("W1", [None]), ("W2", [None]), ("W3", [None]), ("W4", [None])],
}

# sizes: the full run follows BENCHMARKS.md; --quick shrinks every workload (< 3 minutes)
FULL: dict[str, dict[str, Any]] = {
    "W0": {"commits": 2000},
    "W1": {"steps": 1000, "activity_steps": 1000},
    "W2": {"runs": 2000},
    "W3": {"runs": 200},
    "W4": {"runs": 200, "sleep": 2.0},
    "W5": {"parked": [10_000, 100_000]},
    "W6": {"steps": 10_000},
    "W7": {"runs": 2000, "workers": [1, 2, 4]},
    "W8": {"runs": 200, "finished": 1_000_000},
}
QUICK: dict[str, dict[str, Any]] = {
    "W0": {"commits": 500},  # fsync latency is bursty on a virtual disk: not too few
    "W1": {"steps": 300, "activity_steps": 20},  # Temporal: 20 activities, 300 local activities
    "W2": {"runs": 300},
    "W3": {"runs": 30},
    "W4": {"runs": 50, "sleep": 2.0},
    "W5": {"parked": [100, 500], "settle": 0.5},
    "W6": {"steps": 1000},
    "W7": {"runs": 100, "workers": [1, 2, 4]},
    "W8": {"runs": 30, "finished": 20_000},
}
# where a peer is too slow for the common size in reasonable time, a smaller one (stated
# in the JSON); DBOS's W3 pause spans its queue's 1 s polling period (see common.idle_gap)
OVERRIDES: dict[tuple[str, str, bool], dict[str, Any]] = {
    ("temporal", "W2", False): {"runs": 500},
    ("temporal", "W2", True): {"runs": 15},
    ("temporal", "W4", True): {"runs": 10},
    ("restate", "W2", True): {"runs": 60},
    ("dbos", "W1", True): {"steps": 100},
    ("dbos", "W2", True): {"runs": 20},
    ("dbos", "W3", True): {"runs": 3, "gap": 1.0},
    ("dbos", "W3", False): {"runs": 100, "gap": 1.0},
    ("dbos", "W3-direct", True): {},  # in-process: no polling cycle to spread over
    ("dbos", "W3-direct", False): {},
    ("dbos", "W5", False): {"parked": [1_000, 10_000]},
    ("dbos", "W5", True): {"parked": [30, 60], "settle": 0.5},
}


# W5 reads memory, which does not drift as timings do, and parking 100,000 runs takes
# minutes: the full run measures it in its first repetition only
ONCE = {"W5"}


def params(system: str, workload: str, quick: bool) -> dict[str, Any]:
    """The sizes of one measurement; a variant (W3-direct) takes its workload's sizes."""
    name = workload.split("-")[0]
    base = (QUICK if quick else FULL)[name]
    return {**base, **OVERRIDES.get((system, workload, quick), OVERRIDES.get((system, name, quick), {}))}


def durability(synchronous: str, pg_settings: dict[str, str]) -> dict[str, str]:
    """Each column's durability level: a short label for the table, the long one in the
    legend under it."""
    version = pg_settings.get("server_version", "?").split()[0]
    sync = pg_settings.get("synchronous_commit", "?")
    return {
        "perdure/sqlite": f"SQLite WAL+{synchronous.upper()}",
        "perdure/postgres": f"PG sync_commit={sync}",
        "dbos/sqlite": "SQLite rollback+FULL",
        "dbos/postgres": f"PG sync_commit={sync}",
        "restate/None": "server defaults",
        "temporal/None": "dev server (SQLite)",
        "legend": (
            f"SQLite {sqlite3.sqlite_version}: perdure in WAL mode with synchronous={synchronous.upper()} "
            "(its default); DBOS at SQLite's defaults, a rollback journal with synchronous=FULL. "
            f"PG: PostgreSQL {version}, synchronous_commit={sync}, fsync={pg_settings.get('fsync', '?')}. "
            "Restate: restate-server at its defaults (single node, log in RocksDB with its WAL fsynced). "
            "Temporal: `temporal server start-dev` on its SQLite file (rollback journal), "
            "Temporal's development server, not its production setup."
        ),
    }


# --- one measurement -----------------------------------------------------------------


def measure(system: str, workload: str, backend: str | None, rep: int, args: argparse.Namespace,
            server: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"system": system, "workload": workload, "backend": backend, "rep": rep,
                              "params": params(system, workload, args.quick), "tree": tree()}
    db = None
    if backend == "postgres" and url is None:
        db = f"bench_{system}_{workload.replace('-', '_').lower()}_{os.getpid()}"
        url = pg.create(db)
    command = common.python("-m", "bench.driver", system, workload, "--params", json.dumps(record["params"]),
                            "--server", json.dumps(server))
    if backend:
        command += ["--backend", backend]
    if url:
        command += ["--url", url]
    started = time.monotonic()
    print(f"  rep {rep + 1} {system:<8} {workload:<9} {backend or '':<8} ", end="", flush=True)
    try:
        stdout, stderr, code = run_driver(command, args.timeout)
        result = common.read_result(stdout)
        if code is None:
            record["error"] = f"timed out after {args.timeout:.0f} s"
            record["log"] = stderr[-4000:]
        elif code != 0 or result is None or "error" in result:
            record["error"] = (result or {}).get("error") or f"exit {code}"
            record["log"] = stderr[-4000:]
        else:
            record["result"] = result
    finally:
        if db is not None:
            pg.drop(db)
    record["seconds"] = time.monotonic() - started
    print(f"{record['seconds']:6.1f} s  {_brief(record)}", flush=True)
    return record


def run_driver(command: list[str], timeout: float) -> tuple[str, str, int | None]:
    """Run a driver in a process group of its own; past `timeout`, SIGTERM the group (the
    driver stops what it started), then SIGKILL it. The exit code is None on a timeout."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=common.child_env(), cwd=common.ROOT, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return stdout, stderr, proc.returncode
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        raise
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        return stdout, stderr, None


def _brief(record: dict[str, Any]) -> str:
    if "error" in record:
        return "ERROR " + record["error"][:200]
    r = record["result"]
    sizes = sorted(k for k in r if k.isdigit())
    if sizes:  # W5
        return "; ".join(f"{k} parked: RSS {r[k]['rss'] / 2**20:.0f} MiB (peak {r[k]['peak_rss'] / 2**20:.0f})"
                         for k in sorted(sizes, key=int))
    if "by_workers" in r:  # W7
        return "; ".join(f"{k} workers {v['runs_per_s']:.0f} runs/s {1000 * v['cpu_s_per_run']:.1f} CPU-ms/run"
                         for k, v in r["by_workers"].items())
    for key, fmt in (("us_per_step", "{:.0f} µs/step"), ("runs_per_s", "{:.0f} runs/s"),
                     ("p50_ms", "p50 {:.1f} ms"), ("restart_to_done_s", "restart→done {:.2f} s"),
                     ("claim_to_new_step_ms", "{:.0f} ms"), ("load_seconds", "loaded in {:.0f} s")):
        if key in r:
            return fmt.format(r[key])
    return json.dumps(r)[:160]


@contextlib.contextmanager
def server_for(system: str, logs: Path) -> Iterator[dict[str, Any]]:
    if system == "restate":
        with servers.restate(logs) as found:
            yield found
    elif system == "temporal":
        with servers.temporal(logs) as found:
            yield found
    else:
        yield {}


# --- W8's store ----------------------------------------------------------------------


@contextlib.contextmanager
def w8_stores(args: argparse.Namespace, backends: list[str], records: list[dict[str, Any]]) -> Iterator[dict[str, str]]:
    """One store per backend loaded with finished runs, built once, shared by every
    repetition of W8 (each adds a few hundred runs to a million)."""
    urls: dict[str, str] = {}
    directory = Path(tempfile.mkdtemp(prefix="bench-w8-", dir=os.environ.get("BENCH_TMP")))
    db = f"bench_w8_{os.getpid()}"
    try:
        for backend in backends:
            url = f"sqlite:///{directory}/store.db" if backend == "sqlite" else pg.create(db)
            record = measure("perdure", "W8-setup", backend, 0, args, {}, url)
            records.append(record)
            if "result" in record:
                urls[backend] = url
        yield urls
    finally:
        if "postgres" in backends:
            pg.drop(db)
        shutil.rmtree(directory, ignore_errors=True)


# --- the run -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_bytes": mem,
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_start": os.getloadavg(),
    }


def tree() -> dict[str, Any]:
    """The perdure code measured: the commit, and whether perdure/ had uncommitted changes."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=common.ROOT)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "perdure_uncommitted": bool(git("status", "--porcelain", "perdure"))}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: under 3 minutes")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick: 1)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. W1,W3")
    parser.add_argument("--systems", default="perdure,dbos,restate,temporal",
                        help="systems, e.g. perdure,dbos (the floors are always measured: W0 with W0 "
                             "or W1, W3's bare path with W3)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", type=Path, default=None, help="raw results (default bench/results/run-TIME.json)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds one measurement may take")
    parser.add_argument("--no-install", action="store_true", help="do not install the peers")
    parser.add_argument("--all-reps", action="store_true",
                        help=f"repeat {', '.join(sorted(ONCE))} too (by default measured in the first repetition only)")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    args.systems = [s.strip().lower() for s in args.systems.split(",") if s.strip()]
    args.backends = [b.strip().lower() for b in args.backends.split(",") if b.strip()]
    for name, given, allowed in (("workload", args.workloads, WORKLOADS), ("system", args.systems, SYSTEMS),
                                 ("backend", args.backends, BACKENDS)):
        if unknown := set(given) - set(allowed):
            parser.error(f"unknown {name} {sorted(unknown)}; choose from {allowed}")
    if "floor" not in args.systems and {"W0", "W1", "W3"} & set(args.workloads):
        args.systems.insert(0, "floor")
    args.reps = args.reps or (1 if args.quick else 3)
    args.timeout = args.timeout or (240 if args.quick else 3600)
    return args


def jobs(system: str, args: argparse.Namespace, rep: int) -> list[tuple[str, str | None]]:
    found = []
    wanted = set(args.workloads) | ({"W0"} if "W1" in args.workloads else set())  # W1 / own floor
    for workload, backends in PLAN[system]:
        if workload.split("-")[0] not in wanted or (rep > 0 and workload in ONCE and not args.all_reps):
            continue
        for backend in backends:
            if backend is None or backend in args.backends:
                found.append((workload, backend))
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    peers = [s for s in args.systems if s in ("dbos", "restate", "temporal")]
    if not args.no_install and (problems := install.ensure(peers)):
        for p in problems:
            print("install:", p, file=sys.stderr)
        return 2
    if "postgres" in args.backends and (why := pg.available()):
        print(f"PostgreSQL does not answer at {pg.ADMIN_URL} ({why}): measuring SQLite only "
              "(set BENCH_POSTGRES_URL)", file=sys.stderr)
        args.backends = [b for b in args.backends if b != "postgres"]
    pg_settings = pg.settings() if "postgres" in args.backends else {}
    synchronous = os.environ.get("PERDURE_SQLITE_SYNCHRONOUS", "full")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.json or common.BENCH / "results" / f"run-{stamp}{'-quick' if args.quick else ''}.json"
    logs = out.with_suffix("") if args.json is None else Path(tempfile.mkdtemp(prefix="bench-logs-"))
    run: dict[str, Any] = {
        "started": stamp,
        "quick": args.quick,
        "reps": args.reps,
        "workloads": args.workloads,
        "systems": args.systems,
        "backends": args.backends,
        "machine": machine(),
        "tree": tree(),
        "versions": {**install.versions(), "restate-server": servers.restate_version() if "restate" in args.systems else None,
                     "temporal-cli": servers.temporal_version() if "temporal" in args.systems else None},
        "postgres": pg_settings,
        "sqlite_synchronous": synchronous,
        "durability": durability(synchronous, pg_settings),
        "sizes": {"full": FULL, "quick": QUICK,
                  "overrides": {f"{s}/{w}/{'quick' if q else 'full'}": v for (s, w, q), v in OVERRIDES.items()}},
        "records": [],
    }
    print(f"perdure bench: {'quick, ' if args.quick else ''}{args.reps} repetition(s) of "
          f"{','.join(args.workloads)} for {','.join(args.systems)} on {','.join(args.backends)}", flush=True)
    w8 = "W8" in args.workloads and "perdure" in args.systems
    with w8_stores(args, args.backends, run["records"]) if w8 else contextlib.nullcontext({}) as w8_urls:
        for rep in range(args.reps):
            order = args.systems[rep % len(args.systems):] + args.systems[: rep % len(args.systems)]
            for system in order:
                todo = jobs(system, args, rep)
                if not todo:
                    continue
                try:
                    with server_for(system, logs) as server:
                        for workload, backend in todo:
                            url = w8_urls.get(backend) if workload == "W8" else None
                            if workload == "W8" and url is None:
                                continue
                            run["records"].append(measure(system, workload, backend, rep, args, server, url))
                except Exception as error:  # a peer's server that does not start fails its cells only
                    print(f"  {system}: {type(error).__name__}: {error}", flush=True)
                    for workload, backend in todo:
                        run["records"].append({"system": system, "workload": workload, "backend": backend,
                                               "rep": rep, "error": f"server: {error}"})
    run["machine"]["loadavg_end"] = os.getloadavg()
    run["seconds"] = time.monotonic() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(run, indent=1, default=str))
    out.with_suffix(".md").write_text(report.markdown(run) + "\n")
    print()
    print(report.text(run))
    print(f"\n{run['seconds']:.0f} s; raw results: {out}; Markdown table: {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
