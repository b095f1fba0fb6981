"""What a worker keeps of a run once the run ended here: nothing, and without waiting for
the cyclic garbage collector (a worker serves runs for days; a run left in a reference
cycle is freed only by a collection, and every full collection walks all such runs)."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import perdure
from perdure import runtime, testing


@pytest.fixture
def no_cyclic_collector() -> Iterator[None]:
    was_on = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        (gc.enable if was_on else gc.disable)()


@pytest.mark.parametrize("plain_def", [False, True], ids=["async", "def"])
async def test_a_run_that_ended_is_freed_by_reference_counting(
    make_app, no_cyclic_collector, plain_def
):
    app = make_app()
    executions: list[weakref.ref[Any]] = []

    def note_execution() -> None:  # the run's execution on this worker, weakly
        branch = runtime.current.get()
        executions.append(weakref.ref(branch.execution))  # type: ignore[union-attr]

    @perdure.step(name="double")
    async def double(x: int) -> int:
        return 2 * x

    @perdure.step(name="triple")
    def triple(x: int) -> int:
        return 3 * x

    if plain_def:

        @app.task(id="tally")
        def tally(n: int) -> int:
            note_execution()
            return sum(triple(i) for i in range(n))

    else:

        @app.task(id="tally")
        async def tally(n: int) -> int:
            note_execution()
            # branches of their own, each with its task, as a fan-out makes them
            return sum(await asyncio.gather(*(double(i) for i in range(n))))

    async with testing.worker(app):
        for _ in range(3):
            await (await app.trigger(tally, 4)).result(timeout=10)
        deadline = time.monotonic() + 10
        while any(ref() is not None for ref in executions):  # the worker lets go just after
            assert time.monotonic() < deadline, "a run's execution outlived it"
            await asyncio.sleep(0.01)
    assert len(executions) == 3
