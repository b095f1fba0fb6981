"""Restate's drivers for W1–W4: a service process (bench/apps/restate_app.py on hypercorn)
registered with the restate-server the orchestrator started; this process is the client,
calling the server's HTTP ingress (`/Bench/handler` waits for the result, `/send` only
enqueues). Completion times and journal counts come from the server's admin SQL API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from bench import common
from bench.driver import Job
from bench.perdure_bench import IN_FLIGHT, crash_report

TIMEOUT = httpx.Timeout(600.0)


def service(job: Job, port: int, index: int = 0, env: dict[str, str] | None = None) -> common.Process:
    return common.Process(
        common.python("-m", "bench.apps.restate_app", str(port)),
        log=job.dir / f"restate-service-{index}.log",
        env=env,
    )


@contextlib.contextmanager
def deployed(job: Job, env: dict[str, str] | None = None) -> Iterator[tuple[common.Process, int]]:
    port = common.free_port()
    proc = service(job, port, 0, env).start()
    try:
        common.wait_until(lambda: proc.check_alive() or common.port_open(port), 30, "the Restate service")
        response = httpx.post(
            f"{job.server['admin']}/deployments", json={"uri": f"http://127.0.0.1:{port}"}, timeout=30
        )
        response.raise_for_status()
        yield proc, port
    finally:
        proc.stop(timeout=0.5)  # hypercorn would wait out the server's open HTTP/2 streams


async def call(client: httpx.AsyncClient, job: Job, handler: str, payload: Any) -> Any:
    response = await client.post(f"{job.server['ingress']}/Bench/{handler}", json=payload)
    response.raise_for_status()
    return response.json()


async def send(client: httpx.AsyncClient, job: Job, handler: str, payload: Any) -> str:
    response = await client.post(f"{job.server['ingress']}/Bench/{handler}/send", json=payload)
    response.raise_for_status()
    return str(response.json()["invocationId"])


async def send_all(client: httpx.AsyncClient, job: Job, handler: str, payloads: list[Any]) -> list[str]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(payload: Any) -> str:
        async with gate:
            return await send(client, job, handler, payload)

    return list(await asyncio.gather(*(one(p) for p in payloads)))


async def attach(client: httpx.AsyncClient, job: Job, invocation: str) -> Any:
    response = await client.get(f"{job.server['ingress']}/restate/invocation/{invocation}/attach")
    response.raise_for_status()
    return response.json()


async def query(client: httpx.AsyncClient, job: Job, sql: str) -> list[dict[str, Any]]:
    response = await client.post(
        f"{job.server['admin']}/query", json={"query": sql}, headers={"accept": "application/json"}
    )
    response.raise_for_status()
    return list(response.json()["rows"])


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def w1(job: Job) -> dict[str, Any]:
    n = int(job.params["steps"])
    with deployed(job):
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            await call(client, job, "latency", {})
            started = time.perf_counter()
            out = await call(client, job, "steps", {"steps": n})
            elapsed = time.perf_counter() - started
    return {"us_per_step": 1e6 * (out["last"] - out["first"]) / (n - 1), "steps": n, "run_seconds": elapsed}


async def w2(job: Job) -> dict[str, Any]:
    n = int(job.params["runs"])
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    with deployed(job):
        async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
            await call(client, job, "latency", {})
            started = time.time()
            ids = await send_all(client, job, "steps", [{"steps": 3}] * n)
            triggered = time.time()
            await attach(client, job, ids[-1])
            for invocation in ids:
                await attach(client, job, invocation)
            rows = await query(
                client, job,
                "SELECT id, status, completed_at FROM sys_invocation WHERE target_handler_name = 'steps'",
            )
    mine = set(ids)
    done = [_epoch(r["completed_at"]) for r in rows if r["id"] in mine and r["status"] == "completed"]
    if len(done) != n:
        raise RuntimeError(f"{len(done)} of {n} invocations completed")
    seconds = max(done) - started
    return {
        "runs": n,
        "seconds": seconds,
        "runs_per_s": n / seconds,
        "steps_per_s": 3 * n / seconds,
        "trigger_seconds": triggered - started,
    }


async def w3(job: Job) -> dict[str, Any]:
    n = int(job.params["runs"])
    latencies = []
    with deployed(job):
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            await call(client, job, "latency", {})
            await asyncio.sleep(0.5)
            for _ in range(n):
                await common.idle_gap(job.params)
                before = time.time()
                out = await call(client, job, "latency", {})
                latencies.append(out["t"] - before)
    return common.latency_summary(latencies)


async def w4(job: Job) -> dict[str, Any]:
    n, sleep = int(job.params["runs"]), float(job.params.get("sleep", 2.0))
    env = {"BENCH_W4_DIR": str(job.dir)}
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    with deployed(job, env) as (first, port):
        second = service(job, port, 1, env)
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
                await call(client, job, "latency", {})
                ids = await send_all(client, job, "crash", [{"i": i, "sleep": sleep} for i in range(n)])
                # the first completed run of each invocation is its step A
                recorded = (
                    "SELECT count(DISTINCT j.id) AS n FROM sys_journal j JOIN sys_invocation i "
                    "ON j.id = i.id WHERE i.target_handler_name = 'crash' "
                    "AND j.entry_type = 'Notification: Run'"
                )
                deadline = time.monotonic() + 120
                while (await query(client, job, recorded))[0]["n"] < n:
                    if time.monotonic() > deadline:
                        raise TimeoutError("A steps were not recorded in time")
                    await asyncio.sleep(0.005)
                first.kill()
                killed = time.time()
                second.start()
                restarted = time.time()
                for invocation in ids:
                    await attach(client, job, invocation)
        finally:
            second.stop(timeout=0.5)
    return crash_report(job.dir, n, sleep, killed, restarted)


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4}
