"""DBOS Transact's drivers for W1–W5. DBOS is a library: a workflow runs in the process
that starts it. W1 and W3 "direct" therefore run in this process; W2, W3 (queue), W4 and
W5 use the documented way to hand work to another process: a DBOSClient enqueues into a
queue that a worker process (`python -m bench.apps.dbos_app`) serves."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from bench import common
from bench.driver import Job
from bench.perdure_bench import IN_FLIGHT, crash_report

QUEUE = "bench"
POLL = 0.05  # how often the client checks for a result: pacing only, never in a measured time


def system_url(job: Job) -> str:
    if job.backend == "sqlite":
        return f"sqlite:///{job.dir}/dbos.sqlite"
    assert job.url is not None
    return job.url


def table(job: Job, name: str) -> str:
    return name if job.backend == "sqlite" else f"dbos.{name}"


def in_process(job: Job) -> Any:
    """DBOS launched in this process (the library's own model)."""
    os.environ["BENCH_DBOS_URL"] = system_url(job)
    from bench.apps import dbos_app

    dbos_app.DBOS.launch()  # no queue: this process starts its workflows itself
    return dbos_app


@contextlib.contextmanager
def worker_process(job: Job, env: dict[str, str] | None = None) -> Iterator[common.Process]:
    proc = make_worker(job, 0, env).start()
    try:
        yield proc
    finally:
        proc.stop()


def make_worker(job: Job, index: int, env: dict[str, str] | None = None) -> common.Process:
    return common.Process(
        common.python("-m", "bench.apps.dbos_app"),
        log=job.dir / f"dbos-worker-{index}.log",
        env={"BENCH_DBOS_URL": system_url(job), **(env or {})},
    )


async def client_for(job: Job, proc: common.Process) -> Any:
    """A DBOSClient, once the worker has created the system database and its queue; one
    run through the queue before anything is measured."""
    from dbos import DBOSClient

    deadline = time.monotonic() + 90
    while True:
        proc.check_alive()
        try:
            client = DBOSClient(system_database_url=system_url(job))
            handle = await enqueue(client, "bench-latency", {})
            await handle.get_result(polling_interval_sec=POLL)
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def enqueue(client: Any, workflow: str, payload: Any) -> Any:
    return await client.enqueue_async({"queue_name": QUEUE, "workflow_name": workflow}, payload)


async def enqueue_all(client: Any, workflow: str, payloads: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(payload: Any) -> Any:
        async with gate:
            return await enqueue(client, workflow, payload)

    return list(await asyncio.gather(*(one(p) for p in payloads)))


def count(job: Job, query: str) -> int:
    """A read of DBOS's system tables by the harness (instrumentation)."""
    url = system_url(job)
    if url.startswith("sqlite:"):
        import sqlite3

        conn = sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute(query).fetchone()[0])
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute(query).fetchone()[0])


# --- W1 ------------------------------------------------------------------------------


async def w1(job: Job) -> dict[str, Any]:
    n = int(job.params["steps"])
    app = in_process(job)
    await app.latency({})  # warm
    started = time.perf_counter()
    out = await app.steps({"steps": n})
    elapsed = time.perf_counter() - started
    return {"us_per_step": 1e6 * (out["last"] - out["first"]) / (n - 1), "steps": n, "run_seconds": elapsed}


# --- W2 ------------------------------------------------------------------------------


async def w2(job: Job) -> dict[str, Any]:
    n = int(job.params["runs"])
    with worker_process(job) as proc:
        client = await client_for(job, proc)
        started = time.time()
        handles = await enqueue_all(client, "bench-steps", [{"steps": 3}] * n)
        triggered = time.time()
        await handles[-1].get_result(polling_interval_sec=POLL)
        for h in handles:
            await h.get_result(polling_interval_sec=POLL)
        ids = [h.get_workflow_id() for h in handles]
        statuses = await client.list_workflows_async(workflow_ids=ids, load_input=False, load_output=False)
    bad = [s.status for s in statuses if s.status != "SUCCESS"]
    if bad or len(statuses) != n:
        raise RuntimeError(f"{len(bad)} of {len(statuses)} workflows did not succeed: {set(bad)}")
    end = max(s.updated_at for s in statuses) / 1000
    seconds = end - started
    return {
        "runs": n,
        "seconds": seconds,
        "runs_per_s": n / seconds,
        "steps_per_s": 3 * n / seconds,
        "trigger_seconds": triggered - started,
        "mode": "queue (DBOSClient.enqueue into a worker process)",
    }


# --- W3 ------------------------------------------------------------------------------


async def w3(job: Job) -> dict[str, Any]:
    """Through the queue from a client process (like for like with the other systems)."""
    n = int(job.params["runs"])
    latencies, calls = [], []
    with worker_process(job) as proc:
        client = await client_for(job, proc)
        await asyncio.sleep(0.5)
        for _ in range(n):
            await common.idle_gap(job.params)
            before = time.time()
            handle = await enqueue(client, "bench-latency", {})
            calls.append(time.time() - before)
            out = await handle.get_result(polling_interval_sec=POLL)
            latencies.append(out["t"] - before)
    return {
        **common.latency_summary(latencies),
        "trigger_call": common.latency_summary(calls),
        "mode": "queue (DBOSClient.enqueue into a worker process)",
    }


async def w3_direct(job: Job) -> dict[str, Any]:
    """DBOS.start_workflow in the process that executes it: no client process."""
    from dbos import DBOS

    n = int(job.params["runs"])
    app = in_process(job)
    await app.latency({})
    latencies = []
    for _ in range(n):
        await common.idle_gap(job.params)
        before = time.time()
        handle = await DBOS.start_workflow_async(app.latency, {})
        out = await handle.get_result()
        latencies.append(out["t"] - before)
    return {**common.latency_summary(latencies), "mode": "direct, in-process (no client process)"}


# --- W4 ------------------------------------------------------------------------------


async def w4(job: Job) -> dict[str, Any]:
    n, sleep = int(job.params["runs"]), float(job.params.get("sleep", 2.0))
    env = {"BENCH_W4_DIR": str(job.dir)}
    first = make_worker(job, 0, env).start()
    second = make_worker(job, 1, env)
    try:
        client = await client_for(job, first)
        handles = await enqueue_all(client, "bench-crash", [{"i": i, "sleep": sleep} for i in range(n)])
        recorded = f"SELECT count(*) FROM {table(job, 'operation_outputs')} WHERE function_name = 'a'"
        await asyncio.to_thread(common.wait_until, lambda: count(job, recorded) >= n, 120, "recorded A steps", 0.005)
        first.kill()
        killed = time.time()
        second.start()
        restarted = time.time()
        for h in handles:
            await h.get_result(polling_interval_sec=POLL)
    finally:
        first.kill()
        second.stop()
    return crash_report(job.dir, n, sleep, killed, restarted)


# --- W5 ------------------------------------------------------------------------------


async def w5(job: Job) -> dict[str, Any]:
    found: dict[str, Any] = {}
    parked = 0
    with worker_process(job) as proc:
        client = await client_for(job, proc)
        await asyncio.sleep(1.0)
        baseline = common.memory(proc.pid)
        found["baseline_rss"] = baseline["rss"]
        previous = baseline["rss"]
        for target in job.params["parked"]:
            target = int(target)
            await enqueue_all(client, "bench-park", [{}] * (target - parked))
            sleeping = f"SELECT count(*) FROM {table(job, 'operation_outputs')} WHERE function_name = 'DBOS.sleep'"
            parked_enough = lambda n=target, q=sleeping: count(job, q) >= n  # noqa: E731
            await asyncio.to_thread(common.wait_until, parked_enough, 3000, "parked workflows", 0.2)
            await asyncio.sleep(job.params.get("settle", 2.0))
            now = common.memory(proc.pid)
            found[str(target)] = {
                "rss": now["rss"],
                "peak_rss": now["hwm"],
                "bytes_per_parked_run": (now["rss"] - baseline["rss"]) / target,
                "peak_bytes_per_parked_run": (now["hwm"] - baseline["rss"]) / target,
                "marginal_bytes_per_parked_run": (now["rss"] - previous) / (target - parked),
                "threads": len(os.listdir(f"/proc/{proc.pid}/task")),
            }
            parked, previous = target, now["rss"]
    return found


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W3-direct": w3_direct, "W4": w4, "W5": w5}
