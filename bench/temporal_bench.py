"""Temporal's drivers for W1–W4: a worker process (bench/apps/temporal_app.py) against
the dev server the orchestrator started; this process is the client (`Client.connect`,
`start_workflow`, handles). Completion times are the server's close times."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bench import common
from bench.driver import Job
from bench.perdure_bench import IN_FLIGHT, crash_report

TASK_QUEUE = "bench"


def worker(job: Job, index: int = 0, env: dict[str, str] | None = None) -> common.Process:
    return common.Process(
        common.python("-m", "bench.apps.temporal_app", job.server["address"]),
        log=job.dir / f"temporal-worker-{index}.log",
        env=env,
    )


@contextlib.asynccontextmanager
async def connected(job: Job, env: dict[str, str] | None = None) -> AsyncIterator[tuple[Any, common.Process]]:
    from temporalio.client import Client

    client = await Client.connect(job.server["address"])
    proc = worker(job, 0, env).start()
    try:
        await asyncio.wait_for(run(client, "bench-latency", {}), 60)  # warm: a first workflow
        yield client, proc
    finally:
        proc.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def start(client: Any, workflow: str, payload: Any, prefix: str = "run") -> Any:
    return await client.start_workflow(workflow, payload, id=new_id(prefix), task_queue=TASK_QUEUE)


async def run(client: Any, workflow: str, payload: Any) -> Any:
    return await (await start(client, workflow, payload)).result()


async def start_all(client: Any, workflow: str, payloads: list[Any], prefix: str) -> list[Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(payload: Any) -> Any:
        async with gate:
            return await start(client, workflow, payload, prefix)

    return list(await asyncio.gather(*(one(p) for p in payloads)))


async def w1(job: Job) -> dict[str, Any]:
    n, local = int(job.params["activity_steps"]), int(job.params["steps"])
    async with connected(job) as (client, _):
        started = time.perf_counter()
        out = await run(client, "bench-steps", {"steps": n})
        elapsed = time.perf_counter() - started
        out_local = await run(client, "bench-steps", {"steps": local, "local": True})
    return {
        "us_per_step": 1e6 * (out["last"] - out["first"]) / (n - 1),
        "steps": n,
        "run_seconds": elapsed,
        "us_per_step_local_activity": 1e6 * (out_local["last"] - out_local["first"]) / (local - 1),
        "steps_local_activity": local,
    }


async def w2(job: Job) -> dict[str, Any]:
    n = int(job.params["runs"])
    prefix = new_id("w2")
    async with connected(job) as (client, _):
        started = time.time()
        handles = await start_all(client, "bench-steps", [{"steps": 3}] * n, prefix)
        triggered = time.time()
        await handles[-1].result()
        for h in handles:
            await h.result()
        closed = await asyncio.gather(*(close_time(h) for h in handles))
    seconds = max(closed) - started
    return {
        "runs": n,
        "seconds": seconds,
        "runs_per_s": n / seconds,
        "steps_per_s": 3 * n / seconds,
        "trigger_seconds": triggered - started,
    }


async def close_time(handle: Any) -> float:
    description = await handle.describe()
    return float(description.close_time.timestamp())


async def w3(job: Job) -> dict[str, Any]:
    n = int(job.params["runs"])
    latencies, calls = [], []
    async with connected(job) as (client, _):
        await asyncio.sleep(0.5)
        for _ in range(n):
            await common.idle_gap(job.params)
            before = time.time()
            handle = await start(client, "bench-latency", {})
            calls.append(time.time() - before)
            out = await handle.result()
            latencies.append(out["t"] - before)
    return {**common.latency_summary(latencies), "trigger_call": common.latency_summary(calls)}


async def w4(job: Job) -> dict[str, Any]:
    n, sleep = int(job.params["runs"]), float(job.params.get("sleep", 2.0))
    env = {"BENCH_W4_DIR": str(job.dir)}
    async with connected(job, env) as (client, first):
        second = worker(job, 1, env)
        try:
            handles = await start_all(client, "bench-crash", [{"i": i, "sleep": sleep} for i in range(n)], "w4")
            # A is recorded once its ActivityTaskStarted + Completed events are in the history
            # (event 7: started, WFT scheduled/started/completed, activity scheduled/started/completed)
            deadline = time.monotonic() + 120
            while True:
                lengths = await asyncio.gather(*(h.describe() for h in handles))
                if all(d.history_length >= 7 for d in lengths):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("A activities were not recorded in time")
            first.kill()
            killed = time.time()
            second.start()
            restarted = time.time()
            for h in handles:
                await h.result()
        finally:
            second.stop()
    return crash_report(job.dir, n, sleep, killed, restarted)


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4}
