"""The perdure side of the workloads, written as a user writes tasks. Served by
`perdure worker bench.apps.perdure_app:app` (PERDURE_DATABASE_URL names the store); the
drivers in bench/perdure_bench.py trigger these tasks from another process.

The same shapes exist for every peer in the modules beside this one: each step returns a
small dict carrying the wall-clock time it ran at, so the per-step cost is read from the
steps themselves, whatever the system's own clock or API offers."""

from __future__ import annotations

import os
import time

import perdure
from bench import common

app = perdure.App()


@perdure.step(name="tick")
async def tick(i: int) -> dict:
    return {"i": i, "t": time.time(), "ok": True}


@app.task(id="bench-steps")
async def steps(payload: dict) -> dict:
    """W1 (one run of n sequential steps) and W2 (many runs of 3)."""
    first = last = None
    for i in range(payload["steps"]):
        last = await tick(i)
        first = first or last
    return {"first": first["t"], "last": last["t"]}


@app.task(id="bench-latency")
async def latency(payload: dict) -> dict:
    """W3 and W8: the time at the first line of the body."""
    return {"t": time.time()}


@perdure.step(name="a")
async def step_a(i: int) -> float:
    now = time.time()
    common.append_line(os.path.join(os.environ["BENCH_W4_DIR"], "a.txt"), f"{i} {now}")
    return now


@perdure.step(name="b")
async def step_b(i: int) -> float:
    now = time.time()
    common.append_line(os.path.join(os.environ["BENCH_W4_DIR"], "b.txt"), f"{i} {now}")
    return now


@app.task(id="bench-crash")
async def crash(payload: dict) -> float:
    """W4: step A, a 2 s durable sleep, step B."""
    await step_a(payload["i"])
    await perdure.sleep(payload.get("sleep", 2.0))
    return await step_b(payload["i"])


@app.task(id="bench-park")
async def park(payload: dict) -> None:
    """W5: a run parked in a long durable sleep (BENCHMARKS.md says 10 minutes; an hour
    here, so that no run wakes before the last of 100,000 is parked on a slow machine)."""
    await perdure.sleep(payload.get("sleep", 3600.0))


@perdure.step(name="new")
async def new_step() -> float:
    return time.time()


@app.task(id="bench-resume")
async def resume(payload: dict) -> dict:
    """W6: n steps, then a wait for a token (the run suspends: it leaves the worker), then
    one new step: once the token is completed, the run is claimed again and its body
    replays n recorded steps before it reaches the new one."""
    for i in range(payload["steps"]):
        await tick(i)
    await perdure.wait_for_token(await perdure.create_token())
    return {"new_step_at": await new_step()}
