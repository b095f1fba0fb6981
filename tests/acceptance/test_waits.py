"""Waits with real worker processes: a SIGKILL during a token wait, and parked runs that
cost the worker no memory."""

from __future__ import annotations

import pytest

import perdure
from perdure import runs
from perdure.store import base

pytestmark = pytest.mark.timeout(120)
LONG_LEASE = {"PERDURE_LEASE_SECONDS": "60"}


async def _token(cluster, run_id: str) -> perdure.TokenRecord | None:
    found = await cluster.client.tokens.list(run_id=run_id)
    return found[0] if found else None


async def test_a_sigkill_during_a_token_wait_keeps_the_token_and_resumes(cluster):
    # suspend_after is longer than the token's timeout: the run waits in memory when killed
    first = cluster.worker(PERDURE_SUSPEND_AFTER="600", **LONG_LEASE)
    run_id = await cluster.trigger("approval", {"timeout": 300})
    # Killed once the announcement is recorded (not merely sent): the run is in its wait.
    await cluster.until(lambda: _recorded(cluster, run_id, "announce"), what="token announced")
    token = await _token(cluster, run_id)
    first.kill()
    await cluster.client.tokens.complete(token.id, {"approved": True})  # nobody is up
    cluster.worker(**LONG_LEASE)
    await cluster.until(lambda: _done(cluster, run_id), what="run completed")
    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.COMPLETED
    assert run.output == {"token": token.id, "decision": {"approved": True}}
    assert cluster.count(run_id) == {"announce": 1, "C": 1}  # the URL was sent once
    assert len(await cluster.client.tokens.list(run_id=run_id)) == 1


async def _recorded(cluster, run_id: str, step: str) -> bool:
    entries = (await cluster.client.runs.trace(run_id)).entries
    return any(e.name == step and e.status is runs.EntryStatus.COMPLETED for e in entries)


async def _done(cluster, run_id: str) -> bool:
    return (await cluster.run(run_id)).status.is_terminal


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1])


async def _park(cluster, count: int) -> None:
    store = await cluster.client.store()
    waiting = base.RunFilter(status=["waiting"], limit=100_000)
    before = len(await store.list_runs(waiting))
    for _ in range(count):
        await cluster.trigger("parked")

    async def all_parked() -> bool:
        return len(await store.list_runs(waiting)) >= before + count

    await cluster.until(all_parked, timeout=90, what=f"{count} runs parked")


async def test_runs_waiting_on_tokens_hold_no_worker_memory(cluster):
    worker = cluster.worker()
    await _park(cluster, 1000)  # warms the worker up: code paths, caches, arenas
    after_first = _rss_kib(worker.pid)
    await _park(cluster, 1000)
    after_second = _rss_kib(worker.pid)
    growth = after_second - after_first
    # 1,000 more parked runs: the worker's memory stays put (a few KiB of allocator noise
    # per thousand is fine; a run kept in memory would cost far more)
    assert growth < 4 * 1024, f"RSS grew {growth} KiB for 1,000 more parked runs"


async def test_a_sigkill_while_a_parent_waits_on_children_creates_no_child_twice(cluster):
    first = cluster.worker(PERDURE_SUSPEND_AFTER="600", **LONG_LEASE)  # parent stays in memory
    run_id = await cluster.trigger("fan", {"children": 5})
    await cluster.until(lambda: cluster.count()["leaf"] == 5, what="children started")
    first.kill()  # the parent and its children were all in flight
    cluster.worker(**LONG_LEASE)
    await cluster.until(lambda: _done(cluster, run_id), what="parent completed")
    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.COMPLETED
    assert run.output == [0, 10, 20, 30, 40]
    children = await cluster.client.runs.list(parent_id=run_id)
    assert len(children) == 5  # created once, whatever the replay
    assert all(c.status is perdure.RunStatus.COMPLETED for c in children)
    counts = cluster.count(run_id)
    assert counts["A"] == 1 and counts["C"] == 1
