"""The Temporal side of the workloads: workflows with the shapes of perdure_app.py, each
step an activity (W1 also with local activities), the sleep `workflow.sleep`. A worker
process at the SDK's defaults (sandboxed workflows) on the task queue "bench":

    python -m bench.apps.temporal_app ADDRESS
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import os
    import time

    from bench import common

TASK_QUEUE = "bench"
TIMEOUT = timedelta(seconds=10)  # an activity needs one; what a killed worker's activity waits out


@activity.defn(name="tick")
async def tick(i: int) -> dict:
    return {"i": i, "t": time.time(), "ok": True}


@activity.defn(name="append")
async def append(name: str, i: int) -> float:
    now = time.time()
    common.append_line(os.path.join(os.environ["BENCH_W4_DIR"], f"{name}.txt"), f"{i} {now}")
    return now


@workflow.defn(name="bench-steps")
class Steps:
    @workflow.run
    async def run(self, payload: dict) -> dict:
        first = last = None
        for i in range(payload["steps"]):
            if payload.get("local"):
                last = await workflow.execute_local_activity(tick, i, start_to_close_timeout=TIMEOUT)
            else:
                last = await workflow.execute_activity(tick, i, start_to_close_timeout=TIMEOUT)
            first = first or last
        return {"first": first["t"], "last": last["t"]}


@workflow.defn(name="bench-latency")
class Latency:
    @workflow.run
    async def run(self, payload: dict) -> dict:
        with workflow.unsafe.sandbox_unrestricted():
            now = time.time()  # the wall clock at the first line (workflow.now() is the server's)
        return {"t": now}


@workflow.defn(name="bench-crash")
class Crash:
    @workflow.run
    async def run(self, payload: dict) -> float:
        await workflow.execute_activity(append, args=["a", payload["i"]], start_to_close_timeout=TIMEOUT)
        await workflow.sleep(payload.get("sleep", 2.0))
        return await workflow.execute_activity(append, args=["b", payload["i"]], start_to_close_timeout=TIMEOUT)


async def serve(address: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[Steps, Latency, Crash],
        activities=[tick, append],
    )
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
