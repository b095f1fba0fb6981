"""The Store contract, part 1: opening, creating runs and claiming them.

Each test is one clause of a `base.Store` docstring, run against every backend:
- test_contract.py: lifecycle, create_run and idempotency keys, claim and queue limits
- test_contract_leased.py: the writes of a leased run (checkpoint, suspend, release,
  retry_later, finish) and the events they record
- test_contract_workers.py: workers, liveness, takeovers, fencing, crash loops
- test_contract_client.py: cancel, retry, replay and list
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import perdure
from perdure import runs
from perdure.runs import RunStatus
from perdure.store import base
from tests.store.support import (
    OTHER_TASK,
    QUEUE,
    TASK,
    Worker,
    entry,
    eventually,
    in_status,
    keys,
    leased,
    new_run,
    one_batch,
)

# --- lifecycle ------------------------------------------------------------------------------


async def test_migrate_reports_the_schema_version_and_changes_nothing_more(
    store: base.Store,
) -> None:
    version = await store.migrate()
    assert version >= 1
    assert await store.migrate() == version


async def test_close_is_idempotent(open_store) -> None:
    extra = await open_store()
    await extra.close()
    await extra.close()


async def test_the_clock_moves_forward(store: base.Store) -> None:
    first = await store.now()
    await eventually(lambda: _later_than(store, first), "the database clock advances")


async def _later_than(store: base.Store, t: float) -> bool:
    return await store.now() > t


# --- create_run -------------------------------------------------------------------------


async def test_create_run_returns_the_new_id_and_not_cached(store: base.Store) -> None:
    new = new_run()
    assert await store.create_run(new) == (new.id, False)


async def test_a_new_run_is_queued_with_no_attempt_and_its_fields_as_given(
    store: base.Store,
) -> None:
    new = new_run(
        payload='{"city": "Lyon", "days": [1, 2]}',
        root_id="run_root",
        parent_id="run_parent",
        tags=["a", "b"],
        concurrency_key="tenant-1",
        priority=7,
        idempotency_key="key-1",
        version="v1",
    )
    before = await store.now()
    await store.create_run(new)
    run = await store.get_run(new.id)
    assert run is not None
    assert run.id == new.id
    assert run.task_id == TASK
    assert run.queue == QUEUE
    assert run.status is RunStatus.QUEUED
    assert run.attempts == 0
    assert run.recoveries == 0
    assert run.payload == {"city": "Lyon", "days": [1, 2]}  # decoded, not JSON text
    assert run.tags == ["a", "b"]
    assert (run.root_id, run.parent_id) == ("run_root", "run_parent")
    assert (run.concurrency_key, run.priority) == ("tenant-1", 7)
    assert (run.idempotency_key, run.version) == ("key-1", "v1")
    assert (run.output, run.error, run.metadata) == (None, None, {})
    assert run.started_at is None and run.finished_at is None
    assert run.created_at.tzinfo is not None
    assert before - 1 <= run.created_at.timestamp() <= await store.now() + 1


async def test_get_run_of_an_unknown_id_is_none(store: base.Store) -> None:
    assert await store.get_run("run_nobody") is None


async def test_a_delayed_run_is_not_claimable_before_it_is_due(
    store: base.Store, worker: Worker
) -> None:
    later = new_run(delay=3600)
    await store.create_run(later)
    run = await store.get_run(later.id)
    assert run is not None and run.status is RunStatus.DELAYED
    assert await worker.claim() == []


async def test_a_delayed_run_is_claimable_once_due_and_not_a_moment_before(
    store: base.Store, worker: Worker
) -> None:
    new = new_run(delay=0.05)
    await store.create_run(new)
    run = await store.get_run(new.id)
    assert run is not None and run.status is RunStatus.DELAYED
    claims = await eventually(worker.claim, "the delayed run becomes claimable")
    assert [c.lease.run_id for c in claims] == [new.id]
    # The claim's own transaction time proves it was due when taken.
    assert claims[0].db_now >= run.created_at.timestamp() + 0.05 - 1e-6
    assert claims[0].resumed_from is RunStatus.DELAYED


async def test_a_queued_run_whose_ttl_passed_is_not_claimed_and_ends_expired(
    store: base.Store, worker: Worker
) -> None:
    new = new_run(ttl=0.05)
    await store.create_run(new)
    run = await store.get_run(new.id)
    assert run is not None
    await eventually(
        lambda: _later_than(store, run.created_at.timestamp() + 0.05), "the ttl passes"
    )
    assert await worker.claim() == []
    run = await store.get_run(new.id)
    assert run is not None and run.status is RunStatus.EXPIRED


async def test_a_run_that_started_within_its_ttl_is_not_expired_by_it(
    store: base.Store, worker: Worker
) -> None:
    claim = await leased(worker, ttl=0.05)
    run = await store.get_run(claim.lease.run_id)
    assert run is not None
    await eventually(
        lambda: _later_than(store, run.created_at.timestamp() + 0.05), "the ttl passes"
    )
    assert await store.suspend(claim.lease, await store.now(), 0.0, None)
    assert (await worker.claim_one()).lease.run_id == run.id


async def test_next_due_says_when_the_earliest_delayed_run_becomes_due(
    store: base.Store,
) -> None:
    next_due = getattr(store, "next_due", None)
    if next_due is None:
        pytest.skip("this backend has no next_due (an optional wake-up hint)")
    assert await next_due([TASK]) is None
    soon, later = new_run(delay=60), new_run(delay=600)
    await store.create_run(later)
    await store.create_run(soon)
    await store.create_run(new_run(task_id=OTHER_TASK, delay=1))
    run = await store.get_run(soon.id)
    assert run is not None
    assert await next_due([TASK]) == pytest.approx(run.created_at.timestamp() + 60, abs=1e-3)


# --- idempotency keys -------------------------------------------------------------------------


async def test_a_held_idempotency_key_returns_the_holder(store: base.Store) -> None:
    first, second = new_run(idempotency_key="k"), new_run(idempotency_key="k")
    assert await store.create_run(first) == (first.id, False)
    assert await store.create_run(second) == (first.id, True)
    assert await store.get_run(second.id) is None


async def test_idempotency_keys_are_scoped_to_the_task(store: base.Store) -> None:
    mine, theirs = new_run(idempotency_key="k"), new_run(idempotency_key="k", task_id=OTHER_TASK)
    assert await store.create_run(mine) == (mine.id, False)
    assert await store.create_run(theirs) == (theirs.id, False)


async def test_concurrent_creates_with_one_key_make_one_run(store: base.Store, open_store) -> None:
    other = await open_store()  # another process's connection
    news = [new_run(idempotency_key="once") for _ in range(20)]
    results = await asyncio.gather(
        *[(store if i % 2 else other).create_run(n) for i, n in enumerate(news)]
    )
    created = [run_id for run_id, cached in results if not cached]
    assert len(created) == 1
    assert {run_id for run_id, _ in results} == set(created)


@pytest.mark.parametrize(
    "status", sorted(runs.TERMINAL, key=lambda s: s.value), ids=lambda s: s.value
)
async def test_a_finished_run_frees_its_key_unless_it_completed(
    store: base.Store, worker: Worker, status: RunStatus
) -> None:
    first_id = await in_status(worker, status, idempotency_key="k")
    again = new_run(idempotency_key="k")
    if status in runs.KEY_FREEING:
        assert await store.create_run(again) == (again.id, False)
    else:
        assert await store.create_run(again) == (first_id, True)


async def test_a_retry_committed_with_the_failure_holds_the_runs_key(
    store: base.Store, worker: Worker
) -> None:
    claim = await leased(worker, idempotency_key="k")
    error = runs.RunError(type="ValueError", message="boom")
    failed, retried = await one_batch(
        store,
        lambda: store.finish(claim.lease, RunStatus.FAILED, None, error, [], None),
        lambda: store.retry_run(claim.lease.run_id, 3600),
    )
    assert failed is True and retried.status is RunStatus.QUEUED
    assert await store.create_run(new_run(idempotency_key="k")) == (claim.lease.run_id, True)


@pytest.mark.parametrize(
    "status",
    [RunStatus.DELAYED, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.RETRYING],
    ids=lambda s: s.value,
)
async def test_an_unfinished_run_holds_its_key(
    store: base.Store, worker: Worker, status: RunStatus
) -> None:
    first_id = await in_status(worker, status, idempotency_key="k")
    assert await store.create_run(new_run(idempotency_key="k")) == (first_id, True)


async def test_a_canceled_run_frees_its_key(store: base.Store) -> None:
    first = new_run(idempotency_key="k")
    await store.create_run(first)
    await store.cancel_run(first.id)
    again = new_run(idempotency_key="k")
    assert await store.create_run(again) == (again.id, False)


async def test_a_key_is_held_only_for_its_ttl(store: base.Store) -> None:
    first = new_run(idempotency_key="k", idempotency_key_ttl=0.05)
    await store.create_run(first)

    async def a_new_run_takes_the_key() -> bool:
        run_id, cached = await store.create_run(new_run(idempotency_key="k"))
        assert (run_id == first.id) == cached
        return not cached

    await eventually(a_new_run_takes_the_key, "the key expires after its ttl")
    # ... and the new holder holds it for its own (default) ttl.
    run_id, cached = await store.create_run(new_run(idempotency_key="k"))
    assert cached and run_id != first.id


# --- claim ----------------------------------------------------------------------------------


async def test_a_first_claim_is_attempt_1_with_the_run_and_its_journal(
    store: base.Store, worker: Worker
) -> None:
    new = new_run(tags=["x"], parent_id="run_p", root_id="run_r", idempotency_key="k", version="v1")
    await store.create_run(new)
    claim = await worker.claim_one()
    assert claim.lease.run_id == new.id
    assert (claim.task_id, claim.payload) == (TASK, new.payload)
    assert (claim.attempt, claim.recoveries) == (1, 0)
    assert claim.resumed_from is RunStatus.QUEUED
    assert (claim.tags, claim.parent_id, claim.root_id) == (["x"], "run_p", "run_r")
    assert (claim.idempotency_key, claim.version) == ("k", "v1")
    assert claim.journal == []
    run = await store.get_run(new.id)
    assert run is not None
    assert (run.status, run.attempts) == (RunStatus.RUNNING, 1)
    assert run.started_at is not None


async def test_each_claim_gets_a_fresh_lease_token(store: base.Store, worker: Worker) -> None:
    await store.create_run(new_run())
    await store.create_run(new_run())
    first, second = await worker.claim()
    assert first.lease.token != second.lease.token
    assert await store.release(first.lease, 0.0, None)
    again = await worker.claim_one()
    assert again.lease.run_id == first.lease.run_id
    assert again.lease.token not in (first.lease.token, second.lease.token)


async def test_a_run_is_claimed_once(store: base.Store, worker: Worker, start_worker) -> None:
    other = await start_worker("wrk_other")
    await store.create_run(new_run())
    await worker.claim_one()
    assert await other.claim() == []
    assert await worker.claim() == []


async def test_concurrent_claims_never_hand_out_one_run_twice(
    store: base.Store, start_worker
) -> None:
    workers = [await start_worker(f"wrk_{i}") for i in range(4)]
    created = {(await store.create_run(new_run()))[0] for _ in range(30)}
    batches = await asyncio.gather(*[w.claim(limit=10) for w in workers])
    claimed = [c.lease.run_id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) <= created


async def test_claim_takes_only_runs_of_the_given_tasks(store: base.Store, worker: Worker) -> None:
    mine, theirs = new_run(), new_run(task_id=OTHER_TASK)
    await store.create_run(theirs)
    await store.create_run(mine)
    assert [c.lease.run_id for c in await worker.claim()] == [mine.id]
    assert [c.lease.run_id for c in await worker.claim([OTHER_TASK])] == [theirs.id]


async def test_claim_takes_at_most_limit_runs(store: base.Store, worker: Worker) -> None:
    for _ in range(5):
        await store.create_run(new_run())
    assert len(await worker.claim(limit=3)) == 3
    assert len(await worker.claim(limit=3)) == 2


async def test_a_queue_limit_caps_the_runs_running_at_once(
    store: base.Store, worker: Worker
) -> None:
    await store.set_queue_limits({QUEUE: 2})
    for _ in range(5):
        await store.create_run(new_run())
    first = await worker.claim(limit=10)
    assert len(first) == 2
    assert await worker.claim(limit=10) == []
    done = runs.RunStatus.COMPLETED
    assert await store.finish(first[0].lease, done, "null", None, [], None)
    assert len(await worker.claim(limit=10)) == 1


async def test_no_number_of_concurrent_claimers_exceeds_a_queue_limit(
    store: base.Store, worker: Worker, start_worker
) -> None:
    await store.set_queue_limits({QUEUE: 3})
    for _ in range(20):
        await store.create_run(new_run())
    # Workers in other processes, and several claims at once through one store.
    workers = [await start_worker(f"wrk_{i}") for i in range(4)] + [worker] * 4
    for _ in range(3):
        await asyncio.gather(*[w.claim(limit=10) for w in workers])
    running = await store.list_runs(base.RunFilter(status=["running"]))
    assert len(running) == 3


async def test_claimers_of_different_tasks_never_exceed_the_limit_of_their_shared_queue(
    store: base.Store, start_worker
) -> None:
    # Each worker serves a task of its own, so no two claims compete for the same runs:
    # only the queue's slots stand between them, whatever each one counted beforehand.
    await store.set_queue_limits({QUEUE: 3})
    tasks = [f"task-{i}" for i in range(4)]
    for task_id in tasks * 5:
        await store.create_run(new_run(task_id=task_id))
        await store.create_run(new_run(task_id=task_id, concurrency_key="tenant-a"))
    workers = [await start_worker(f"wrk_{t}") for t in tasks]
    held: dict[str, tuple[base.Store, base.Lease]] = {}
    most: dict[str | None, int] = {None: 0, "tenant-a": 0}
    for _ in range(6):
        claimed = await asyncio.gather(
            *[w.claim([t], limit=10) for w, t in zip(workers, tasks, strict=True)]
        )
        for worker, claims in zip(workers, claimed, strict=True):
            held.update({c.lease.run_id: (worker.store, c.lease) for c in claims})
        running = await store.list_runs(base.RunFilter(status=["running"]))
        for key in most:
            holding = [r for r in running if r.concurrency_key == key]
            most[key] = max(most[key], len(holding))
            for run in holding[:1]:  # one run per key ends: a slot is free again
                owner, lease = held[run.id]
                assert await owner.finish(lease, runs.RunStatus.COMPLETED, "null", None, [], None)
    assert most == {None: 3, "tenant-a": 3}


async def test_queue_limits_can_be_changed_and_lifted(store: base.Store, worker: Worker) -> None:
    for _ in range(6):
        await store.create_run(new_run())
    await store.set_queue_limits({QUEUE: 1})
    assert len(await worker.claim()) == 1
    await store.set_queue_limits({QUEUE: 3})
    assert len(await worker.claim()) == 2
    await store.set_queue_limits({QUEUE: None})
    assert len(await worker.claim()) == 3


async def test_a_queue_limit_applies_per_concurrency_key(store: base.Store, worker: Worker) -> None:
    await store.set_queue_limits({QUEUE: 1})
    key_of = {}
    for key in ("tenant-a", "tenant-a", "tenant-b", "tenant-b", None, None):
        new = new_run(concurrency_key=key)
        key_of[new.id] = str(key)
        await store.create_run(new)
    claims = await worker.claim(limit=10)
    assert sorted(key_of[c.lease.run_id] for c in claims) == ["None", "tenant-a", "tenant-b"]
    assert await worker.claim(limit=10) == []


async def test_a_full_queue_does_not_hide_the_runs_of_another_queue(
    store: base.Store, worker: Worker
) -> None:
    await store.set_queue_limits({"busy": 1, "free": None})
    for _ in range(3):
        await store.create_run(new_run(queue="busy", priority=10))
    free = new_run(queue="free")
    await store.create_run(free)
    await worker.claim_one()  # fills "busy"
    assert [c.lease.run_id for c in await worker.claim(limit=1)] == [free.id]


async def test_a_suspended_run_frees_its_queue_slot(store: base.Store, worker: Worker) -> None:
    await store.set_queue_limits({QUEUE: 1})
    first, second = new_run(priority=1), new_run()
    await store.create_run(first)
    await store.create_run(second)
    claim = await worker.claim_one()
    assert claim.lease.run_id == first.id
    assert await worker.claim() == []
    assert await store.suspend(claim.lease, await store.now() + 3600, 0.0, None)
    assert [c.lease.run_id for c in await worker.claim()] == [second.id]


async def test_claims_go_by_priority_then_first_come(store: base.Store, worker: Worker) -> None:
    order = [("low-1", 0), ("high", 5), ("mid", 1), ("low-2", 0)]
    ids = {}
    for name, priority in order:
        new = new_run(priority=priority)
        ids[new.id] = name
        await store.create_run(new)
    taken = [ids[(await worker.claim_one()).lease.run_id] for _ in order]
    assert taken == ["high", "mid", "low-1", "low-2"]


async def test_a_versioned_run_is_claimed_only_by_a_worker_serving_its_version(
    store: base.Store, worker: Worker
) -> None:
    new = new_run(version="v1")
    await store.create_run(new)
    assert await worker.claim(version="v2") == []
    assert [c.lease.run_id for c in await worker.claim(version="v1")] == [new.id]


async def test_a_run_keeps_the_version_it_started_on(store: base.Store, worker: Worker) -> None:
    new = new_run()
    await store.create_run(new)
    claim = await worker.claim_one(version="v1")
    assert claim.version == "v1"
    assert await store.release(claim.lease, 0.0, None)
    assert await worker.claim(version="v2") == []
    assert (await worker.claim_one(version="v1")).lease.run_id == new.id


async def test_the_journal_comes_with_the_claim(store: base.Store, worker: Worker) -> None:
    await store.create_run(new_run())
    claim = await worker.claim_one()
    entries = [entry("0", 1, result='"a"'), entry("0.1", 1, result='"b"')]
    assert await store.checkpoint(claim.lease, entries)
    assert await store.suspend(claim.lease, await store.now(), 0.0, None)
    again = await worker.claim_one()
    assert sorted(keys(again.journal)) == [("0", 1, ""), ("0.1", 1, "")]
    assert sorted(e.result or "" for e in again.journal) == ['"a"', '"b"']


async def test_the_claims_journal_holds_the_same_entries_as_the_stored_journal(
    store: base.Store, worker: Worker
) -> None:
    """A claim builds its entries its own way (fast, in no set order): field for field, they
    are the entries the journal holds."""
    await store.create_run(new_run())
    claim = await worker.claim_one()
    failed = runs.Entry(
        key=runs.Key(branch="0", seq=2),
        kind=runs.EntryKind.STEP,
        name="charge",
        status=runs.EntryStatus.RETRYING,
        error={"type": "ValueError", "message": "no", "args": [1, "x"]},
        attempts=2,
        wake_at=await store.now() + 60,
        started_at=1.5,
        finished_at=2.5,
        attempt=1,
    )
    value = entry("0", 2, sub="random:0", kind=runs.EntryKind.VALUE, result="0.25")
    assert await store.checkpoint(claim.lease, [entry("0", 1), failed, value])
    assert await store.release(claim.lease, 0.0, None)
    again = await worker.claim_one()
    stored = await store.journal(claim.lease.run_id)
    assert len(stored) == 3
    assert sorted(again.journal, key=lambda e: e.order) == stored
    assert {e.key: e for e in again.journal}[failed.key].error == failed.error


async def test_a_claim_of_several_runs_gives_each_its_own_journal(
    store: base.Store, worker: Worker
) -> None:
    for _ in range(3):
        await store.create_run(new_run())
    first = await worker.claim(limit=3)
    written = {}
    for n, claim in enumerate(first):
        entries = [entry("0", seq, result=f'"{n}-{seq}"') for seq in range(1, n + 2)]
        assert await store.checkpoint(claim.lease, entries)
        assert await store.release(claim.lease, 0.0, None)
        written[claim.lease.run_id] = sorted(e.result or "" for e in entries)
    again = await worker.claim(limit=3)
    assert {c.lease.run_id: sorted(e.result or "" for e in c.journal) for c in again} == written


async def test_a_read_asked_for_later_answers_alike_however_often_asked(store: base.Store) -> None:
    """`rows_later` and `values_later` (a claim asks for its reads at once, then reads
    them where it needs them, some more than once)."""

    def op(tx: Any) -> tuple[Any, ...]:
        rows = tx.rows_later("SELECT 1 AS one", {})
        values = tx.values_later("SELECT 2 AS two", {})
        return rows(), rows(), values(), values()

    rows, again, values, values_again = await store._write_op(op)  # type: ignore[attr-defined]
    assert [dict(r) for r in rows] == [dict(r) for r in again] == [{"one": 1}]
    assert list(values) == list(values_again) == [(2,)]


async def test_a_finished_run_wakes_the_other_workers_only_when_it_freed_a_queues_slot(
    backend: Any, store_url: str, store: base.Store, worker: Worker
) -> None:
    """Its own worker looks for more work when a run ends; the others are woken only if
    the run made something claimable (a slot of a limited queue, a waiting parent): with
    several workers, a wake-up of each at every finished run costs each a claim."""
    async with _another_worker_listening(backend, store_url) as wakeup:
        await store.set_queue_limits({"limited": 5})
        plain, limited = new_run(), new_run(queue="limited")
        await store.create_run(plain)
        await store.create_run(limited)
        assert await wakeup.wait(5)  # the triggers woke it
        while await wakeup.wait(0.2):  # their wake-ups may come apart
            pass
        held = {c.lease.run_id: c.lease for c in await worker.claim(limit=2)}
        assert set(held) == {plain.id, limited.id}
        assert await store.finish(held[plain.id], RunStatus.COMPLETED, "1", None, [], None)
        assert not await wakeup.wait(0.3)
        assert await store.finish(held[limited.id], RunStatus.COMPLETED, "1", None, [], None)
        assert await wakeup.wait(5)


async def test_a_claim_that_leaves_due_runs_wakes_the_other_workers(
    backend: Any, store_url: str, store: base.Store, worker: Worker
) -> None:
    """A claim with less room than due runs leaves some (on PostgreSQL locked until it
    commits, so claims meanwhile skipped them): the others are woken to take them, rather
    than wait for their poll. A claim that takes all it found wakes nobody."""
    async with _another_worker_listening(backend, store_url) as wakeup:
        delayed = new_run(delay=0.05)  # found by due time, the others from the queue
        await store.create_run(delayed)
        for _ in range(2):
            await store.create_run(new_run())
        run = await store.get_run(delayed.id)
        assert run is not None
        await eventually(
            lambda: _later_than(store, run.created_at.timestamp() + 0.05), "the delay passes"
        )
        while await wakeup.wait(0.2):  # the triggers' wake-ups
            pass
        assert len(await worker.claim(limit=2)) == 2  # of three found
        assert await wakeup.wait(5)
        assert len(await worker.claim(limit=2)) == 1  # of one found
        assert not await wakeup.wait(0.3)


@contextlib.asynccontextmanager
async def _another_worker_listening(backend: Any, store_url: str) -> AsyncIterator[Any]:
    """The wake-ups of another worker's store on the same database, bound to this loop."""
    from tests.store import support

    listener = backend.make(store_url)
    await listener.open()
    try:
        await listener.register_worker(support.worker_info("wrk_listening"))
        wakeup = listener.wakeup
        await wakeup.wait(0)  # binds it to this loop
        yield wakeup
    finally:
        await listener.close()


# --- concurrency -------------------------------------------------------------------------------


async def test_a_write_the_database_refuses_fails_alone_in_its_batch(store: base.Store) -> None:
    """On PostgreSQL a run's row is sent without waiting for its answer, with COMMIT: the
    database's refusal (a run id taken twice) still fails that call alone."""
    first = new_run()
    await store.create_run(first)
    others = [new_run() for _ in range(4)]
    outcomes = await asyncio.gather(
        *[store.create_run(run) for run in others],
        store.create_run(new_run(id=first.id, payload='{"n": 2}')),  # last: refused at COMMIT
        return_exceptions=True,
    )
    assert isinstance(outcomes[4], perdure.StoreError), outcomes
    assert "\n" not in str(outcomes[4])
    assert outcomes[:4] == [(run.id, False) for run in others]
    for run in [first, *others]:
        assert (await store.get_run(run.id)) is not None
    assert (await store.get_run(first.id)).payload == {"n": 1}
    # Refused alone, then the next write: the connection was left ready for it.
    with pytest.raises(perdure.StoreError):
        await store.create_run(new_run(id=first.id))
    later = new_run()
    assert await store.create_run(later) == (later.id, False)


async def test_a_failing_call_does_not_undo_the_calls_made_at_the_same_time(
    store: base.Store, worker: Worker
) -> None:
    leases = [(await leased(worker)).lease for _ in range(5)]
    ending = [(await leased(worker)).lease for _ in range(2)]
    done_id = await in_status(worker, RunStatus.COMPLETED)
    outcomes = await asyncio.gather(
        *[store.checkpoint(lease, [entry("0", 1)]) for lease in leases],
        store.cancel_run("run_nobody"),
        store.retry_run(done_id, 3600),
        *[store.checkpoint(lease, [entry("0", 2)]) for lease in leases],
        *[store.finish(lease, RunStatus.COMPLETED, "7", None, [], None) for lease in ending],
        return_exceptions=True,
    )
    assert outcomes[:5] == [True] * 5 and outcomes[7:] == [True] * 7
    assert isinstance(outcomes[5], perdure.RunNotFound)
    assert isinstance(outcomes[6], perdure.InvalidTransition)
    for lease in leases:
        assert keys(await store.journal(lease.run_id)) == [("0", 1, ""), ("0", 2, "")]
    for lease in ending:
        run = await store.get_run(lease.run_id)
        assert run is not None and (run.status, run.output) == (RunStatus.COMPLETED, 7)
