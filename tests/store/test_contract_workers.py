"""The Store contract, part 3: workers, liveness, takeovers and fencing.

A worker is "dead" once `reap_workers` declares it so: its liveness lock is free (its
process died) or its heartbeat is older than the lease. Its running runs are then taken
over by the next claim, under a new lease token, and every write the old holder still
tries changes nothing.
"""

from __future__ import annotations

import asyncio
import signal

from perdure import runs
from perdure.runs import RunStatus
from perdure.store import base
from tests.store.support import (
    Worker,
    entry,
    eventually,
    keys,
    new_run,
    start_child_worker,
)


async def declared_dead(reaper: base.Store, worker_id: str) -> None:
    """Wait until `worker_id`'s heartbeat is stale enough for a tiny lease, and reap it."""

    async def reaped() -> list[str]:
        return await reaper.reap_workers(0.001)

    assert await eventually(reaped, f"{worker_id} is declared dead") == [worker_id]


# --- liveness -------------------------------------------------------------------------------


async def test_a_live_worker_is_not_reaped(store: base.Store, start_worker) -> None:
    await start_worker("wrk_a")
    assert await store.reap_workers(3600) == []


async def test_a_killed_worker_process_is_reaped_and_its_runs_taken_over(
    store: base.Store, store_url: str, start_worker
) -> None:
    new = new_run()
    await store.create_run(new)
    child, claimed = await start_child_worker(store_url, "wrk_child")
    try:
        assert claimed == [new.id]
        assert await store.reap_workers(3600) == []  # its process holds the lock
        other = await start_worker("wrk_other")
        assert await other.claim() == []  # a live worker's run is not taken
        child.send_signal(signal.SIGKILL)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    # The lock died with the process (the server takes a few ms to notice on some backends)
    assert await _reaped(store) == ["wrk_child"]
    takeover = await other.claim_one()
    assert takeover.lease.run_id == new.id
    assert takeover.resumed_from is RunStatus.RUNNING
    assert (takeover.attempt, takeover.recoveries) == (1, 1)


async def test_a_worker_whose_store_closed_without_stopping_is_reaped(
    store: base.Store, start_worker
) -> None:
    gone = await start_worker("wrk_gone")
    await gone.store.close()  # its connections, and the lock, are gone as with its process
    assert await _reaped(store) == ["wrk_gone"]


async def test_a_worker_whose_heartbeat_is_older_than_the_lease_is_reaped(
    store: base.Store, start_worker
) -> None:
    paused = await start_worker("wrk_paused")
    await declared_dead(store, "wrk_paused")
    assert not await asyncio.to_thread(paused.store.heartbeat, "wrk_paused")
    assert await store.reap_workers(0.001) == []  # declared dead once


async def test_a_heartbeat_keeps_a_worker_alive(store: base.Store, start_worker) -> None:
    live = await start_worker("wrk_live")
    registered = await store.now()

    async def old_enough() -> bool:
        return await store.now() - registered > 0.3

    await eventually(old_enough, "0.3 s pass")
    assert await asyncio.to_thread(live.store.heartbeat, "wrk_live")
    assert await store.reap_workers(0.3) == []


async def test_a_stopped_workers_runs_are_taken_over(store: base.Store, start_worker) -> None:
    leaving = await start_worker("wrk_leaving")
    await store.create_run(new_run())
    claim = await leaving.claim_one()
    await leaving.store.stop_worker("wrk_leaving")
    staying = await start_worker("wrk_staying")
    takeover = await staying.claim_one()
    assert takeover.lease.run_id == claim.lease.run_id
    assert (takeover.resumed_from, takeover.recoveries) == (RunStatus.RUNNING, 1)


async def test_a_run_released_before_its_worker_stops_is_not_a_takeover(
    store: base.Store, start_worker
) -> None:
    leaving = await start_worker("wrk_leaving")
    await store.create_run(new_run())
    claim = await leaving.claim_one()
    assert await leaving.store.release(claim.lease, 0.0, None)
    await leaving.store.stop_worker("wrk_leaving")
    staying = await start_worker("wrk_staying")
    again = await staying.claim_one()
    assert (again.resumed_from, again.recoveries, again.attempt) == (RunStatus.QUEUED, 0, 1)


# --- fencing ----------------------------------------------------------------------------------


async def test_after_a_takeover_the_old_lease_writes_nothing(
    store: base.Store, start_worker
) -> None:
    a = await start_worker("wrk_a")
    new = new_run()
    await store.create_run(new)
    old = (await a.claim_one()).lease
    assert await a.store.checkpoint(old, [entry("0", 1)])
    await declared_dead(store, "wrk_a")  # A is paused, not gone: its process still runs
    b = await start_worker("wrk_b")
    takeover = await b.claim_one()
    assert takeover.lease.run_id == new.id
    assert (takeover.resumed_from, takeover.attempt, takeover.recoveries) == (
        RunStatus.RUNNING,
        1,
        1,
    )
    assert keys(takeover.journal) == [("0", 1, "")]
    events_before = await store.events(new.id)

    # A wakes up and carries on: nothing it writes lands.
    progress = base.Progress(metadata={"by": "a"})
    error = runs.RunError(type="ValueError", message="late")
    now = await store.now()
    assert not await a.store.checkpoint(old, [entry("0", 2)], progress)
    assert not await a.store.suspend(old, now + 60, 0.0, progress)
    assert not await a.store.release(old, 0.0, progress)
    assert not await a.store.retry_later(old, error, 0, [runs.Key(branch="0", seq=1)], progress)
    assert not await a.store.finish(old, RunStatus.COMPLETED, '"a"', None, [], progress)
    run = await store.get_run(new.id)
    assert run is not None
    assert (run.status, run.output, run.metadata, run.attempts) == (RunStatus.RUNNING, None, {}, 1)
    assert keys(await store.journal(new.id)) == [("0", 1, "")]
    assert await store.events(new.id) == events_before

    # B's lease is the current one.
    assert await b.store.checkpoint(takeover.lease, [entry("0", 2)])
    assert await b.store.finish(takeover.lease, RunStatus.COMPLETED, '"b"', None, [], None)
    run = await store.get_run(new.id)
    assert run is not None and (run.status, run.output) == (RunStatus.COMPLETED, "b")


async def test_a_declared_dead_worker_is_told_to_stop(store: base.Store, start_worker) -> None:
    a = await start_worker("wrk_a")
    assert await asyncio.to_thread(a.store.heartbeat, "wrk_a")
    await declared_dead(store, "wrk_a")
    assert not await asyncio.to_thread(a.store.heartbeat, "wrk_a")


# --- crash loops ---------------------------------------------------------------------------------


async def test_a_run_taken_over_more_than_max_recoveries_times_ends_failed(
    store: base.Store, start_worker
) -> None:
    new = new_run(idempotency_key="k")
    await store.create_run(new)
    first = await start_worker("wrk_1")
    await first.claim_one(max_recoveries=1)
    await declared_dead(store, "wrk_1")
    second = await start_worker("wrk_2")
    takeover = await second.claim_one(max_recoveries=1)  # the one recovery allowed
    assert (takeover.lease.run_id, takeover.recoveries) == (new.id, 1)
    await declared_dead(store, "wrk_2")
    third = await start_worker("wrk_3")
    assert await third.claim(max_recoveries=1) == []
    run = await store.get_run(new.id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkerCrashed"
    assert run.finished_at is not None
    assert await third.claim(max_recoveries=1) == []
    assert [e.to_status for e in await store.events(new.id)][-1] == "failed"
    # A failed run frees its key.
    again = new_run(idempotency_key="k")
    assert await store.create_run(again) == (again.id, False)


async def test_a_retried_run_counts_its_takeovers_afresh(store: base.Store, start_worker) -> None:
    new = new_run()
    await store.create_run(new)
    for i in range(3):  # claim, takeover, then the takeover past max_recoveries=1
        crashing = await start_worker(f"wrk_{i}")
        await crashing.claim(max_recoveries=1)
        await declared_dead(store, crashing.id)
    fixed = await start_worker("wrk_fixed")
    assert await fixed.claim(max_recoveries=1) == []
    await store.retry_run(new.id, 3600)
    # A new attempt, after a fix: it may crash once again and be taken over.
    attempt = await fixed.claim_one(max_recoveries=1)
    assert (attempt.attempt, attempt.recoveries) == (2, 0)
    await fixed.store.stop_worker(fixed.id)
    rescuer = await start_worker("wrk_rescuer")
    takeover = await rescuer.claim_one(max_recoveries=1)
    assert (takeover.lease.run_id, takeover.recoveries) == (new.id, 1)


async def test_a_run_being_canceled_whose_worker_died_is_taken_over_still_canceling(
    store: base.Store, start_worker
) -> None:
    new = new_run()
    await store.create_run(new)
    a = await start_worker("wrk_a")
    await a.claim_one()
    await store.cancel_run(new.id)
    await declared_dead(store, "wrk_a")
    b = await start_worker("wrk_b")
    (claim,) = await b.claim()  # the new worker runs the cancellation and its cleanup
    assert claim.lease.run_id == new.id and claim.cancel_requested
    assert claim.recoveries == 1


async def test_cancel_requests_name_the_runs_of_that_worker_only(
    store: base.Store, worker: Worker, start_worker
) -> None:
    other = await start_worker("wrk_other")
    mine, theirs = new_run(), new_run()
    await store.create_run(mine)
    claim = await worker.claim_one()
    await store.create_run(theirs)
    await other.claim_one()
    assert await store.cancel_requests(worker.id) == []
    await store.cancel_run(mine.id)
    assert await store.cancel_requests(worker.id) == [mine.id]
    assert await store.cancel_requests(other.id) == []
    assert await store.finish(claim.lease, RunStatus.CANCELED, None, None, [], None)
    assert await store.cancel_requests(worker.id) == []


async def _reaped(store: base.Store) -> list[str]:
    """The first non-empty reap, within the suite's deadline."""
    found: list[str] = []

    async def reap() -> bool:
        found.extend(await store.reap_workers(3600))
        return bool(found)

    await eventually(reap, "the dead worker reaped")
    return found
