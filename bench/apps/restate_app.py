"""The Restate side of the workloads: one service whose handlers have the shapes of
perdure_app.py, each durable step a `ctx.run_typed`, the sleep `ctx.sleep`. Served the way
Restate's Python documentation serves it, with hypercorn (HTTP/2), behind a
`restate-server` at its defaults that the orchestrator starts.

    python -m bench.apps.restate_app PORT
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import timedelta

import restate

from bench import common

service = restate.Service("Bench")


async def tick(i: int) -> dict:
    return {"i": i, "t": time.time(), "ok": True}


@service.handler()
async def steps(ctx: restate.Context, payload: dict) -> dict:
    first = last = None
    for i in range(payload["steps"]):
        last = await ctx.run_typed("tick", tick, restate.RunOptions(), i)
        first = first or last
    return {"first": first["t"], "last": last["t"]}


@service.handler()
async def latency(ctx: restate.Context, payload: dict) -> dict:
    return {"t": time.time()}


async def append(name: str, i: int) -> float:
    now = time.time()
    common.append_line(os.path.join(os.environ["BENCH_W4_DIR"], f"{name}.txt"), f"{i} {now}")
    return now


@service.handler()
async def crash(ctx: restate.Context, payload: dict) -> float:
    await ctx.run_typed("a", append, restate.RunOptions(), "a", payload["i"])
    await ctx.sleep(timedelta(seconds=payload.get("sleep", 2.0)))
    return await ctx.run_typed("b", append, restate.RunOptions(), "b", payload["i"])


app = restate.app([service])


def serve(port: int) -> None:
    import hypercorn.asyncio
    import hypercorn.config

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    asyncio.run(hypercorn.asyncio.serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    serve(int(sys.argv[1]))
