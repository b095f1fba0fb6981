"""perdure's drivers for W1–W8: `perdure worker` processes execute the tasks of
bench/apps/perdure_app.py; this process is the client (`perdure.App(url)`, `trigger`,
`app.runs`), as a web app or a script would be.

A few figures need what the public API does not count cheaply (how many A steps the journal
holds, how many runs are parked, 1,000,000 finished runs loaded in bulk): those read or
write the store's tables directly, and say so."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import perdure
from bench import common, pg
from bench.apps import perdure_app as tasks
from bench.driver import Job

APP = "bench.apps.perdure_app:app"
IN_FLIGHT = 50  # triggers a client keeps in flight at once (W2, W4, W5), for every system


@contextlib.contextmanager
def workers(job: Job, count: int = 1, env: dict[str, str] | None = None) -> Iterator[list[common.Process]]:
    procs = [worker(job, i, env) for i in range(count)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()


def worker(job: Job, index: int = 0, env: dict[str, str] | None = None) -> common.Process:
    assert job.url is not None
    return common.Process(
        common.python("-m", "perdure", "worker", APP),
        log=job.dir / f"worker-{index}.log",
        env={"PERDURE_DATABASE_URL": job.url, **(env or {})},
    )


async def warm(client: perdure.App, procs: Sequence[common.Process]) -> None:
    """One run through every worker's path before measuring: imports, connections and
    the first claim are not what a workload measures."""
    for p in procs:
        p.check_alive()
    handles = [await client.trigger(tasks.latency, {}) for _ in procs]
    for h in handles:
        await h.result(timeout=60)


async def trigger_all(
    client: perdure.App, task: perdure.Task[Any, Any], payloads: Sequence[Any]
) -> list[perdure.RunHandle[Any]]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(payload: Any) -> perdure.RunHandle[Any]:
        async with gate:
            return await client.trigger(task, payload)

    return list(await asyncio.gather(*(one(p) for p in payloads)))


def scalar(url: str, query: str) -> Any:
    """A read of the store's tables by the harness (instrumentation, not the API)."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(query).fetchone()[0]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchone()[0]


# --- W1: one run of n sequential steps -----------------------------------------------


async def w1(job: Job) -> dict[str, Any]:
    n = int(job.params["steps"])
    client = perdure.App(job.url)
    with workers(job) as procs:
        await warm(client, procs)
        started = time.perf_counter()
        handle = await client.trigger(tasks.steps, {"steps": n})
        out = await handle.result(timeout=600)
        elapsed = time.perf_counter() - started
    return {
        "us_per_step": 1e6 * (out["last"] - out["first"]) / (n - 1),
        "steps": n,
        "run_seconds": elapsed,
    }


# --- W2 / W7: many runs of 3 steps from a client process -----------------------------


async def throughput(job: Job, worker_count: int) -> dict[str, Any]:
    n = int(job.params["runs"])
    client = perdure.App(job.url)
    with workers(job, worker_count) as procs:
        await warm(client, procs)
        cpu = CpuMeter(job, procs)
        started = time.time()
        cpu.start()
        handles = await trigger_all(client, tasks.steps, [{"steps": 3}] * n)
        triggered = time.time()
        await handles[-1].result(timeout=900)
        finished = [await client.runs.wait(h.id, timeout=900) for h in handles]
        cpu_seconds = cpu.stop()
    bad = [r.status.value for r in finished if r.status is not perdure.RunStatus.COMPLETED]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not complete: {sorted(set(bad))}")
    end = max(r.finished_at.timestamp() for r in finished if r.finished_at is not None)
    seconds = end - started
    return {
        "runs": n,
        "workers": worker_count,
        "seconds": seconds,
        "runs_per_s": n / seconds,
        "steps_per_s": 3 * n / seconds,
        "trigger_seconds": triggered - started,
        **cpu_seconds,
    }


async def w2(job: Job) -> dict[str, Any]:
    return await throughput(job, 1)


async def w7(job: Job) -> dict[str, Any]:
    found = {}
    for count in job.params["workers"]:
        result = await throughput(job, int(count))
        result["cpu_s_per_run"] = result["cpu_seconds"] / result["runs"]
        found[str(count)] = result
    return {"by_workers": found}


class CpuMeter:
    """CPU seconds of the worker processes and of this database's PostgreSQL backends,
    read from /proc every 0.2 s (a backend that exits keeps its last reading)."""

    def __init__(self, job: Job, procs: Sequence[common.Process]) -> None:
        self.db = job.url.rpartition("/")[2] if job.url and job.backend == "postgres" else None
        self.procs = procs
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self._conn = pg.connect() if self.db is not None else None
        self._read(baseline=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._read()
        if self._conn is not None:
            self._conn.close()
        spent = {"workers": 0.0, "postgres": 0.0}
        for key, value in self.last.items():
            spent[key[0]] += value - self.first.get(key, 0.0)
        return {
            "cpu_seconds": spent["workers"] + spent["postgres"],
            "cpu_seconds_workers": spent["workers"],
            "cpu_seconds_postgres": spent["postgres"],
        }

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self._read()

    def _read(self, baseline: bool = False) -> None:
        pids = [("workers", pid) for p in self.procs for pid in common.descendants(p.pid)]
        if self.db is not None:
            pids += [("postgres", pid) for pid in pg.backend_pids(self.db, self._conn)]
        for key in pids:
            value = common.cpu_seconds(key[1])
            if value is None:
                continue
            if baseline:
                self.first[key] = value
            self.last[key] = value


# --- W3 / W8: latency from a trigger to the first line of the body -------------------


async def w3(job: Job) -> dict[str, Any]:
    n = int(job.params["runs"])
    client = perdure.App(job.url)
    latencies, calls = [], []
    with workers(job) as procs:
        await warm(client, procs)
        await asyncio.sleep(0.5)  # an idle worker
        for _ in range(n):
            await common.idle_gap(job.params)
            before = time.time()
            handle = await client.trigger(tasks.latency, {})
            calls.append(time.time() - before)
            out = await handle.result(timeout=60)
            latencies.append(out["t"] - before)
    return {**common.latency_summary(latencies), "trigger_call": common.latency_summary(calls)}


w8 = w3  # on the store the orchestrator loaded with finished runs (see w8_setup)


# --- W4: SIGKILL the worker while runs sleep -----------------------------------------


async def w4(job: Job) -> dict[str, Any]:
    n, sleep = int(job.params["runs"]), float(job.params.get("sleep", 2.0))
    assert job.url is not None
    client = perdure.App(job.url)
    env = {"BENCH_W4_DIR": str(job.dir)}
    first = worker(job, 0, env).start()
    second = worker(job, 1, env)
    try:
        await warm(client, [first])
        handles = await trigger_all(client, tasks.crash, [{"i": i, "sleep": sleep} for i in range(n)])
        recorded = "SELECT count(*) FROM journal WHERE name = 'a' AND status = 'completed'"
        await asyncio.to_thread(
            common.wait_until, lambda: scalar(job.url, recorded) >= n, 120, "200 recorded A steps", 0.005
        )
        first.kill()
        killed = time.time()
        second.start()
        restarted = time.time()
        finished = [await client.runs.wait(h.id, timeout=300) for h in handles]
    finally:
        first.kill()
        second.stop()
    statuses = {r.status.value for r in finished}
    return {**crash_report(job.dir, n, sleep, killed, restarted), "statuses": sorted(statuses)}


def crash_report(directory: Path, n: int, sleep: float, killed: float, restarted: float) -> dict[str, Any]:
    """From the A and B lines: time from the restart until every run has done B, the
    lines beyond one per run (re-runs), and which of those had begun before the kill."""
    a, b = common.read_lines(directory / "a.txt"), common.read_lines(directory / "b.txt")
    first_a: dict[str, float] = {}
    first_b: dict[str, float] = {}
    for lines, first in ((a, first_a), (b, first_b)):
        for run, at in lines:
            first[run] = min(first.get(run, float("inf")), float(at))
    if len(first_b) < n:
        raise RuntimeError(f"only {len(first_b)} of {n} runs did B")
    reruns_a, reruns_b = len(a) - len(first_a), len(b) - len(first_b)
    in_flight = sum(
        1 for lines, first in ((a, first_a), (b, first_b))
        for run, at in lines if float(at) != first[run] and first[run] < killed
    )
    late = [first_b[r] - (first_a[r] + sleep) for r in first_b]
    return {
        "runs": n,
        "restart_to_done_s": max(first_b.values()) - restarted,
        "max_late_vs_deadline_s": max(late),
        "p50_late_vs_deadline_s": common.percentile(late, 50),
        "reruns_a": reruns_a,
        "reruns_b": reruns_b,
        "reruns_in_flight_at_kill": in_flight,
        "a_lines_at_kill": sum(1 for _, at in a if float(at) < killed),
    }


# --- W5: parked runs and the worker's memory -----------------------------------------


async def w5(job: Job) -> dict[str, Any]:
    assert job.url is not None
    client = perdure.App(job.url)
    found: dict[str, Any] = {}
    parked = 0
    with workers(job) as procs:
        pid = procs[0].pid
        await warm(client, procs)
        await asyncio.sleep(1.0)
        baseline = common.memory(pid)
        found["baseline_rss"] = baseline["rss"]
        previous = baseline["rss"]
        for target in job.params["parked"]:
            target = int(target)
            await trigger_all(client, tasks.park, [{}] * (target - parked))
            waiting = "SELECT count(*) FROM runs WHERE status = 'waiting'"
            parked_enough = lambda n=target, q=waiting: scalar(job.url, q) >= n  # noqa: E731
            await asyncio.to_thread(common.wait_until, parked_enough, 3000, f"{target} parked runs", 0.2)
            await asyncio.sleep(job.params.get("settle", 2.0))  # suspended runs have left memory
            now = common.memory(pid)
            found[str(target)] = {
                "rss": now["rss"],
                "peak_rss": now["hwm"],
                "bytes_per_parked_run": (now["rss"] - baseline["rss"]) / target,
                "peak_bytes_per_parked_run": (now["hwm"] - baseline["rss"]) / target,
                "marginal_bytes_per_parked_run": (now["rss"] - previous) / (target - parked),
                "threads": len(os.listdir(f"/proc/{pid}/task")),
            }
            parked, previous = target, now["rss"]
    return found


# --- W6: resume of a run with a long journal -----------------------------------------


async def w6(job: Job) -> dict[str, Any]:
    n = int(job.params["steps"])
    client = perdure.App(job.url)
    with workers(job) as procs:
        await warm(client, procs)
        handle = await client.trigger(tasks.resume, {"steps": n})
        await until_status(client, handle.id, perdure.RunStatus.WAITING, 600)
        [token] = await client.tokens.list(run_id=handle.id)
        await asyncio.sleep(0.2)  # the worker has let the run go
        await client.tokens.complete(token.id, {})
        out = await handle.result(timeout=600)
        trace = await client.runs.trace(handle.id)
    claims = [e.at for e in trace.events if e.to_status == "running"]
    if len(claims) < 2:
        raise RuntimeError(f"the run was not claimed again: {[e.to_status for e in trace.events]}")
    return {
        "steps": n,
        "claim_to_new_step_ms": 1000 * (out["new_step_at"] - claims[-1]),
        "journal_entries": len(trace.entries),
    }


async def until_status(client: perdure.App, run_id: str, status: perdure.RunStatus, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await client.runs.get(run_id)).status is not status:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not reach {status.value}")
        await asyncio.sleep(0.02)


# --- W8: a store holding many finished runs ------------------------------------------


async def w8_setup(job: Job) -> dict[str, Any]:
    """Load `job.params["finished"]` finished runs, each a copy of one real 3-step run
    with its journal and events, with bulk SQL; the database's size on disk after."""
    assert job.url is not None
    client = perdure.App(job.url)
    with workers(job) as procs:
        await warm(client, procs)
        handle = await client.trigger(tasks.steps, {"steps": 3})
        await handle.result(timeout=60)
    total = int(job.params["finished"])
    started = time.perf_counter()
    if job.backend == "sqlite":
        size = _clone_sqlite(job.url, handle.id, total)
    else:
        size = _clone_postgres(job.url, handle.id, total)
    return {"finished_runs": total, "load_seconds": time.perf_counter() - started, "bytes_on_disk": size}


def _clone_plan(columns: dict[str, list[str]], skip: dict[str, set[str]], new_id: str) -> list[tuple[str, str, str, str]]:
    """Per table holding run rows: (table, target columns, select expressions, filter)."""
    plan = []
    for table, cols in columns.items():
        key = "id" if table == "runs" else "run_id"
        if key not in cols:
            continue
        kept = [c for c in cols if c not in skip.get(table, set())]
        exprs = [new_id if c in ("id", "root_id", "run_id") and (table == "runs" or c == "run_id") else f"t.{c}" for c in kept]
        plan.append((table, ", ".join(kept), ", ".join(exprs), f"t.{key} = :template"))
    return plan


def _clone_sqlite(url: str, template: str, total: int) -> int:
    path = Path(url.removeprefix("sqlite:///"))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # loading, not measuring
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    columns, skip = {}, {}
    for table in tables:
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        columns[table] = [r[1] for r in info]
        skip[table] = {r[1] for r in info if r[5] and r[2].upper() == "INTEGER"}
    plan = _clone_plan(columns, skip, "'run_bulk' || printf('%09d', n)")
    batch = 100_000
    for start in range(0, total, batch):
        end = min(total, start + batch)
        conn.execute("BEGIN")
        for table, cols, exprs, where in plan:
            conn.execute(
                f"WITH RECURSIVE s(n) AS (SELECT :start UNION ALL SELECT n + 1 FROM s WHERE n < :end) "
                f"INSERT INTO {table} ({cols}) SELECT {exprs} FROM {table} t, s WHERE {where.replace(':template', ':tpl')}",
                {"start": start, "end": end - 1, "tpl": template},
            )
        conn.execute("COMMIT")
    # no ANALYZE: perdure never runs it, so a store that grew by itself has no statistics
    # either (PostgreSQL's autovacuum analyzes a grown table: _clone_postgres does too)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _clone_postgres(url: str, template: str, total: int) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, column_default, is_identity FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall()
        columns: dict[str, list[str]] = {}
        skip: dict[str, set[str]] = {}
        for table, column, default, identity in rows:
            columns.setdefault(table, []).append(column)
            if (default or "").startswith("nextval") or identity == "YES":
                skip.setdefault(table, set()).add(column)
        plan = _clone_plan(columns, skip, "'run_bulk' || lpad(n::text, 9, '0')")
        conn.execute("SET synchronous_commit = off")  # loading, not measuring
        batch = 100_000
        for start in range(0, total, batch):
            end = min(total, start + batch)
            with conn.transaction():
                for table, cols, exprs, where in plan:
                    conn.execute(
                        f"INSERT INTO {table} ({cols}) SELECT {exprs} FROM {table} t, "
                        f"generate_series(%(start)s::bigint, %(end)s::bigint) AS n WHERE {where.replace(':template', '%(tpl)s')}",
                        {"start": start, "end": end - 1, "tpl": template},
                    )
        conn.execute("VACUUM ANALYZE")
        name = url.rpartition("/")[2]
    return pg.size(name)


WORKLOADS = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W5": w5,
    "W6": w6,
    "W7": w7,
    "W8": w8,
    "W8-setup": w8_setup,
}
