"""The app the acceptance tests run in real `perdure worker` processes.

Every step appends "<step> <run id> <pid>" to $PERDURE_TEST_DIR/effects.log, so a test
can count how often each step's body ran, whatever process ran it. A step that must be
caught in flight waits for a file named "release" (or "release-<name>").
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import perdure

app = perdure.App()
DIR = Path(os.environ.get("PERDURE_TEST_DIR", "."))


def effect(name: str) -> None:
    run_id = perdure.context().run_id
    with open(DIR / "effects.log", "a") as file:
        file.write(f"{name} {run_id} {os.getpid()} {time.time():.3f}\n")
        file.flush()
        os.fsync(file.fileno())


async def held(name: str) -> None:
    """Wait (outside any journal) until the test releases this step."""
    while not ((DIR / "release").exists() or (DIR / f"release-{name}").exists()):
        await asyncio.sleep(0.01)


@perdure.step
async def step_a(n: int) -> int:
    effect("A")
    return n + 1


@perdure.step
async def step_b(n: int) -> int:
    effect("B-start")
    await held("B")
    effect("B")
    return n * 10


@perdure.step
def step_c(n: int) -> int:
    effect("C")
    return n - 1


@app.task(id="pipeline")
async def pipeline(payload: dict) -> dict:
    a = await step_a(payload["n"])
    b = await step_b(a)
    c = await step_c(b)
    return {"a": a, "b": b, "c": c}


@app.task(id="napper")
async def napper(payload: dict) -> dict:
    a = await step_a(payload["n"])
    await perdure.sleep(payload["seconds"])
    woke = perdure.now().timestamp()
    c = await step_c(a)
    return {"c": c, "woke": woke}


@perdure.step
def die() -> None:
    effect("die")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(id="crasher")
async def crasher() -> None:
    await step_a(0)
    await die()


@perdure.step
async def occupy(seconds: float) -> None:
    effect("occupy-start")
    await asyncio.sleep(seconds)
    effect("occupy-end")


@app.task(id="limited", queue="narrow", concurrency_limit=3)
async def limited(payload: dict) -> None:
    await occupy(payload["seconds"])


@perdure.step
def blocking_step(seconds: float) -> str:
    effect("blocking-start")
    time.sleep(seconds)
    effect("blocking-end")
    return "done"


@app.task(id="graceful")
def graceful(payload: dict) -> str:
    first = blocking_step(payload["seconds"])
    return first + "/" + str(step_c(1))


@perdure.step
def announce(token_id: str) -> str:
    effect("announce")
    return token_id


@app.task(id="approval")
async def approval(payload: dict) -> dict:
    token = await perdure.create_token(timeout=payload.get("timeout"))
    await announce(token.id)
    decision = await perdure.wait_for_token(token)
    await step_c(1)
    return {"token": token.id, "decision": decision}


@app.task(id="parked")
async def parked() -> None:
    await perdure.wait_for_token(await perdure.create_token())


@app.task(id="leaf")
async def leaf(n: int) -> int:
    effect("leaf")
    await perdure.sleep(0.5)
    return n * 10


@app.task(id="fan")
async def fan(payload: dict) -> list[int]:
    await step_a(0)
    results = await leaf.batch_trigger_and_wait(list(range(payload["children"])))
    await step_c(1)
    return [r.unwrap() for r in results]


# --- chaos: steps, sleeps and children on one limited queue --------------------------------


@perdure.step
async def chaos_step(name: str, n: int) -> int:
    effect(f"{name}-start")
    try:
        await asyncio.sleep(0.05 + (n % 7) * 0.02)
    except asyncio.CancelledError:
        effect(f"{name}-cut")  # its run was frozen (lease or store lost): it stops here
        raise
    effect(f"{name}-end")
    return n + 1


@app.task(id="chaos-child", queue="chaos", concurrency_limit=8)
async def chaos_child(n: int) -> int:
    return await chaos_step("child", n)


@app.task(id="chaos", queue="chaos")
async def chaos(payload: dict) -> int:
    n = payload["n"]
    a = await chaos_step("s1", n)
    await perdure.sleep(0.3)
    b = await chaos_step("s2", a)
    if n % 4 == 0:
        b = await chaos_child.trigger_and_wait(b)
    return b
