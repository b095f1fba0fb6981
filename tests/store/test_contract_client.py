"""The Store contract, part 4: what clients do to runs (cancel, retry, replay, list)."""

from __future__ import annotations

import pytest

import perdure
from perdure import runs
from perdure.runs import RunStatus
from perdure.store import base
from tests.store.support import (
    OTHER_TASK,
    Worker,
    entry,
    fresh_id,
    in_status,
    keys,
    leased,
    new_run,
)

IDLE = [RunStatus.DELAYED, RunStatus.QUEUED, RunStatus.RETRYING]
FINISHED = sorted(runs.TERMINAL, key=lambda s: s.value)


def by_value(status: RunStatus) -> str:
    return status.value


# --- cancel_run --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", IDLE, ids=by_value)
async def test_a_run_nobody_executes_is_canceled_at_once(
    store: base.Store, worker: Worker, status: RunStatus
) -> None:
    run_id = await in_status(worker, status)
    canceled = await store.cancel_run(run_id)
    assert canceled.status is RunStatus.CANCELED
    assert canceled.finished_at is not None
    assert await store.get_run(run_id) == canceled
    assert (await store.events(run_id))[-1].to_status == "canceled"
    assert await worker.claim() == []


async def test_a_waiting_run_is_woken_with_a_cancellation_request_so_its_code_can_clean_up(
    store: base.Store, worker: Worker
) -> None:
    run_id = await in_status(worker, RunStatus.WAITING)
    requested = await store.cancel_run(run_id)
    assert requested.status is RunStatus.WAITING
    (claim,) = await worker.claim()  # due at once, whatever its wait's deadline was
    assert claim.lease.run_id == run_id and claim.cancel_requested
    assert claim.resumed_from is RunStatus.WAITING


async def test_a_running_run_gets_a_cancellation_request_and_keeps_running(
    store: base.Store, worker: Worker
) -> None:
    run_id = await in_status(worker, RunStatus.RUNNING)
    requested = await store.cancel_run(run_id)
    assert requested.status is RunStatus.RUNNING
    assert await store.cancel_requests(worker.id) == [run_id]
    await store.cancel_run(run_id)  # asking twice is fine
    assert await store.cancel_requests(worker.id) == [run_id]


async def test_a_cancellation_that_crosses_a_suspension_is_not_lost(
    store: base.Store, worker: Worker
) -> None:
    # The worker decided to suspend before it saw the request (it polls cancel_requests).
    claim = await leased(worker)
    await store.cancel_run(claim.lease.run_id)
    assert await store.suspend(claim.lease, await store.now() + 3600, 0.0, None)
    # Either the run is canceled now, or a worker gets it back at once to act on the request.
    reclaimed = [c.lease.run_id for c in await worker.claim()]
    run = await store.get_run(claim.lease.run_id)
    assert run is not None
    assert run.status is RunStatus.CANCELED or (
        reclaimed == [run.id] and await store.cancel_requests(worker.id) == [run.id]
    )


@pytest.mark.parametrize("status", FINISHED, ids=by_value)
async def test_a_finished_run_cannot_be_canceled(
    store: base.Store, worker: Worker, status: RunStatus
) -> None:
    run_id = await in_status(worker, status)
    with pytest.raises(perdure.InvalidTransition):
        await store.cancel_run(run_id)
    run = await store.get_run(run_id)
    assert run is not None and run.status is status


async def test_canceling_an_unknown_run_raises_run_not_found(store: base.Store) -> None:
    with pytest.raises(perdure.RunNotFound):
        await store.cancel_run("run_nobody")


# --- retry_run --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(runs.RETRYABLE, key=by_value), ids=by_value)
async def test_retry_takes_a_run_back_to_queued_for_a_new_attempt_on_its_journal(
    store: base.Store, worker: Worker, status: RunStatus
) -> None:
    new = new_run()
    await store.create_run(new)
    claim = await worker.claim_one()
    assert await store.checkpoint(claim.lease, [entry("0", 1)])
    error = runs.RunError(type="ValueError", message="boom")
    assert await store.finish(claim.lease, status, None, error, [], None)
    retried = await store.retry_run(new.id, 3600)
    assert retried.status is RunStatus.QUEUED
    assert retried.finished_at is None
    again = await worker.claim_one()
    assert (again.lease.run_id, again.attempt) == (new.id, 2)
    assert keys(again.journal) == [("0", 1, "")]


async def test_retry_deletes_the_entries_the_finish_asked_to_drop(
    store: base.Store, worker: Worker
) -> None:
    new = new_run()
    await store.create_run(new)
    claim = await worker.claim_one()
    escaped = entry("0", 2, status=runs.EntryStatus.FAILED, result=None)
    assert await store.checkpoint(claim.lease, [entry("0", 1), escaped])
    error = runs.RunError(type="ValueError", message="boom")
    assert await store.finish(claim.lease, RunStatus.FAILED, None, error, [escaped.key], None)
    await store.retry_run(new.id, 3600)
    assert keys((await worker.claim_one()).journal) == [("0", 1, "")]


@pytest.mark.parametrize(
    "status", [RunStatus.COMPLETED, RunStatus.EXPIRED, *IDLE, RunStatus.RUNNING], ids=by_value
)
async def test_only_failed_timed_out_or_canceled_runs_can_be_retried(
    store: base.Store, worker: Worker, status: RunStatus
) -> None:
    run_id = await in_status(worker, status)
    with pytest.raises(perdure.InvalidTransition):
        await store.retry_run(run_id, 3600)
    run = await store.get_run(run_id)
    assert run is not None and run.status is status


async def test_retrying_an_unknown_run_raises_run_not_found(store: base.Store) -> None:
    with pytest.raises(perdure.RunNotFound):
        await store.retry_run("run_nobody", 3600)


async def test_retry_retakes_a_free_idempotency_key(store: base.Store, worker: Worker) -> None:
    run_id = await in_status(worker, RunStatus.FAILED, idempotency_key="k")
    await store.retry_run(run_id, 3600)
    assert await store.create_run(new_run(idempotency_key="k")) == (run_id, True)


async def test_retry_leaves_a_key_another_run_took_meanwhile(
    store: base.Store, worker: Worker
) -> None:
    failed_id = await in_status(worker, RunStatus.FAILED, idempotency_key="k")
    newer = new_run(idempotency_key="k")
    assert await store.create_run(newer) == (newer.id, False)
    await store.retry_run(failed_id, 3600)
    assert await store.create_run(new_run(idempotency_key="k")) == (newer.id, True)


# --- replay_run -------------------------------------------------------------------------------


async def a_finished_run_with_a_journal(store: base.Store, worker: Worker) -> base.NewRun:
    """A completed run whose entries were committed in the order
    (0,1), (0.1,1), (0,2), (0.1,2): not the order of their keys."""
    source = new_run(payload='{"n": 1}', tags=["t"], idempotency_key="k")
    await store.create_run(source)
    lease = (await worker.claim_one()).lease
    for branch, seq in [("0", 1), ("0.1", 1), ("0", 2), ("0.1", 2)]:
        assert await store.checkpoint(lease, [entry(branch, seq, result=f'"{branch}/{seq}"')])
    assert await store.finish(lease, RunStatus.COMPLETED, '"done"', None, [], None)
    return source


async def test_replay_makes_a_new_run_of_the_same_task_with_nothing_copied(
    store: base.Store, worker: Worker
) -> None:
    source = await a_finished_run_with_a_journal(store, worker)
    new_id = fresh_id()
    assert await store.replay_run(source.id, new_id, None, None) == new_id
    replay = await store.get_run(new_id)
    assert replay is not None
    assert (replay.task_id, replay.status, replay.attempts) == (source.task_id, RunStatus.QUEUED, 0)
    assert replay.payload == {"n": 1}
    assert replay.root_id == new_id
    assert replay.idempotency_key is None  # replay never copies a key
    assert await store.journal(new_id) == []
    original = await store.get_run(source.id)
    assert original is not None and original.status is RunStatus.COMPLETED
    claim = await worker.claim_one()
    assert (claim.lease.run_id, claim.attempt, claim.journal) == (new_id, 1, [])


async def test_replay_takes_a_new_payload_if_given(store: base.Store, worker: Worker) -> None:
    source = await a_finished_run_with_a_journal(store, worker)
    new_id = fresh_id()
    await store.replay_run(source.id, new_id, '{"n": 2}', None)
    replay = await store.get_run(new_id)
    assert replay is not None and replay.payload == {"n": 2}


async def test_replay_from_a_position_copies_exactly_the_entries_committed_before_it(
    store: base.Store, worker: Worker
) -> None:
    source = await a_finished_run_with_a_journal(store, worker)
    new_id = fresh_id()
    await store.replay_run(source.id, new_id, None, runs.Key(branch="0", seq=2))
    copied = await store.journal(new_id)
    assert keys(copied) == [("0", 1, ""), ("0.1", 1, "")]
    assert [e.result for e in copied] == ['"0/1"', '"0.1/1"']
    claim = await worker.claim_one()
    assert claim.lease.run_id == new_id
    assert sorted(keys(claim.journal)) == [("0", 1, ""), ("0.1", 1, "")]  # in no set order
    # The source keeps its whole journal.
    assert len(await store.journal(source.id)) == 4


async def test_replay_from_an_unknown_position_fails_and_creates_nothing(
    store: base.Store, worker: Worker
) -> None:
    source = await a_finished_run_with_a_journal(store, worker)
    new_id = fresh_id()
    with pytest.raises(perdure.PerdureError):
        await store.replay_run(source.id, new_id, None, runs.Key(branch="0", seq=99))
    assert await store.get_run(new_id) is None
    assert await store.journal(new_id) == []


async def test_replaying_an_unknown_run_raises_run_not_found(store: base.Store) -> None:
    with pytest.raises(perdure.RunNotFound):
        await store.replay_run("run_nobody", fresh_id(), None, None)


# --- list_runs --------------------------------------------------------------------------------


async def created(store: base.Store, **fields: object) -> runs.Run:
    new = new_run(**fields)
    await store.create_run(new)
    run = await store.get_run(new.id)
    assert run is not None
    return run


def ids(found: list[runs.Run]) -> set[str]:
    return {run.id for run in found}


async def listed(store: base.Store, **filters: object) -> set[str]:
    return ids(await store.list_runs(base.RunFilter(**filters)))  # type: ignore[arg-type]


async def test_list_runs_filters_by_status(store: base.Store, worker: Worker) -> None:
    failed = await in_status(worker, RunStatus.FAILED)
    done = await in_status(worker, RunStatus.COMPLETED)
    queued = await in_status(worker, RunStatus.QUEUED)
    assert await listed(store, status=["queued"]) == {queued}
    assert await listed(store, status=["failed", "completed"]) == {failed, done}
    assert await listed(store) == {queued, failed, done}


async def test_list_runs_filters_by_task_and_tag(store: base.Store) -> None:
    a = await created(store, tags=["red", "big"])
    b = await created(store, tags=["blue"])
    c = await created(store, task_id=OTHER_TASK, tags=["red"])
    assert await listed(store, task_id=OTHER_TASK) == {c.id}
    assert await listed(store, tag="red") == {a.id, c.id}
    assert await listed(store, tag="blue") == {b.id}
    assert await listed(store, tag="re") == set()  # a whole tag, not a substring
    assert await listed(store, tag="red", task_id=OTHER_TASK) == {c.id}


async def test_list_runs_filters_by_parent_and_root(store: base.Store) -> None:
    root = await created(store)
    child = await created(store, parent_id=root.id, root_id=root.id)
    grandchild = await created(store, parent_id=child.id, root_id=root.id)
    await created(store)
    assert await listed(store, parent_id=root.id) == {child.id}
    assert await listed(store, parent_id=child.id) == {grandchild.id}
    assert await listed(store, root_id=root.id) == {root.id, child.id, grandchild.id}


async def test_list_runs_filters_by_creation_time(store: base.Store) -> None:
    first, second, third = [await created(store) for _ in range(3)]
    t1, t2, t3 = (r.created_at.timestamp() for r in (first, second, third))
    assert t1 < t2 < t3
    assert await listed(store, created_after=(t1 + t2) / 2) == {second.id, third.id}
    assert await listed(store, created_before=(t2 + t3) / 2) == {first.id, second.id}
    assert await listed(store, created_after=(t1 + t2) / 2, created_before=(t2 + t3) / 2) == {
        second.id
    }


async def test_list_runs_pages_with_a_cursor_without_losing_or_repeating_runs(
    store: base.Store,
) -> None:
    everything = {(await created(store)).id for _ in range(7)}
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.list_runs(base.RunFilter(limit=3, cursor=cursor))
        assert len(page) <= 3
        if not page:
            break
        seen += [run.id for run in page]
        cursor = page[-1].id
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == everything


async def test_list_runs_comes_newest_first_across_pages(store: base.Store) -> None:
    made = [await created(store, id=run_id) for run_id in ("run_m", "run_z", "run_a", "run_k")]
    newest_first = [r.id for r in sorted(made, key=lambda r: (r.created_at, r.id), reverse=True)]
    assert [r.id for r in await store.list_runs(base.RunFilter())] == newest_first
    first = await store.list_runs(base.RunFilter(limit=2))
    rest = await store.list_runs(base.RunFilter(limit=2, cursor=first[-1].id))
    assert [r.id for r in first + rest] == newest_first


async def test_a_write_that_fails_among_many_at_once_fails_alone(store: base.Store) -> None:
    # Writes made at once are committed together; one that fails must neither undo nor
    # fail the others, and must leave nothing of its own behind.
    import asyncio

    news = [new_run() for _ in range(30)]
    results = await asyncio.gather(
        *[store.create_run(n) for n in news[:15]],
        store.cancel_run("run_that_does_not_exist"),
        store.retry_run("run_that_does_not_exist"),
        *[store.create_run(n) for n in news[15:]],
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert [type(f) for f in failed] == [perdure.RunNotFound, perdure.RunNotFound]
    listed = await store.list_runs(base.RunFilter(limit=100))
    assert sorted(r.id for r in listed) == sorted(n.id for n in news)
