"""The DBOS side of the workloads: the same shapes as perdure_app.py, written as DBOS's
documentation writes them (async workflows and steps, DBOS.sleep_async, a queue that a
DBOSClient enqueues into). DBOS at its documented defaults; BENCH_DBOS_URL is the system
database (sqlite:///... or postgresql://...).

    python -m bench.apps.dbos_app      # a worker process: DBOS.launch(), serve the queue
"""

from __future__ import annotations

import os
import signal
import threading
import time

from dbos import DBOS, DBOSConfig

from bench import common

QUEUE = "bench"

config: DBOSConfig = {"name": "bench", "system_database_url": os.environ["BENCH_DBOS_URL"]}
DBOS(config=config)


@DBOS.step(name="tick")
async def tick(i: int) -> dict:
    return {"i": i, "t": time.time(), "ok": True}


@DBOS.workflow(name="bench-steps")
async def steps(payload: dict) -> dict:
    first = last = None
    for i in range(payload["steps"]):
        last = await tick(i)
        first = first or last
    return {"first": first["t"], "last": last["t"]}


@DBOS.workflow(name="bench-latency")
async def latency(payload: dict) -> dict:
    return {"t": time.time()}


@DBOS.step(name="a")
async def step_a(i: int) -> float:
    now = time.time()
    common.append_line(os.path.join(os.environ["BENCH_W4_DIR"], "a.txt"), f"{i} {now}")
    return now


@DBOS.step(name="b")
async def step_b(i: int) -> float:
    now = time.time()
    common.append_line(os.path.join(os.environ["BENCH_W4_DIR"], "b.txt"), f"{i} {now}")
    return now


@DBOS.workflow(name="bench-crash")
async def crash(payload: dict) -> float:
    await step_a(payload["i"])
    await DBOS.sleep_async(payload.get("sleep", 2.0))
    return await step_b(payload["i"])


@DBOS.workflow(name="bench-park")
async def park(payload: dict) -> None:
    await DBOS.sleep_async(payload.get("sleep", 3600.0))


def launch() -> None:
    DBOS.launch()
    DBOS.register_queue(QUEUE)


def serve() -> None:
    launch()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    DBOS.destroy()


if __name__ == "__main__":
    serve()
