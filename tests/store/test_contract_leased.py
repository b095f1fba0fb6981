"""The Store contract, part 2: the writes of a leased run, each fenced by its lease, and
the status transitions they record."""

from __future__ import annotations

import dataclasses
import math

import pytest

from perdure import runs
from perdure.runs import EntryKind, EntryStatus, Key, RunStatus
from perdure.store import base
from tests.store.support import (
    Worker,
    entry,
    eventually,
    keys,
    leased,
    new_run,
    one_batch,
)

# --- checkpoint -----------------------------------------------------------------------------


async def test_checkpoint_inserts_then_updates_the_entry_at_a_key(
    store: base.Store, worker: Worker
) -> None:
    lease = (await leased(worker)).lease
    wake = await store.now() + 60
    key = runs.Key(branch="0", seq=1)
    pending = runs.Entry(
        key=key, kind=EntryKind.SLEEP, name="sleep", status=EntryStatus.PENDING, wake_at=wake
    )
    assert await store.checkpoint(lease, [pending])
    [stored] = await store.journal(lease.run_id)
    assert (stored.key, stored.kind, stored.status) == (key, EntryKind.SLEEP, EntryStatus.PENDING)
    assert stored.wake_at == pytest.approx(wake)
    done = runs.Entry(
        key=key,
        kind=EntryKind.SLEEP,
        name="sleep",
        status=EntryStatus.COMPLETED,
        result="null",
        wake_at=wake,
    )
    assert await store.checkpoint(lease, [done])
    [stored] = await store.journal(lease.run_id)
    assert (stored.status, stored.result) == (EntryStatus.COMPLETED, "null")


async def test_checkpoint_stores_every_field_of_an_entry(store: base.Store, worker: Worker) -> None:
    lease = (await leased(worker)).lease
    now = await store.now()
    failure = {
        "type": "ValueError",
        "message": "bad",
        "traceback": "tb",
        "module": "builtins",
        "args": ["bad"],
    }
    written = runs.Entry(
        key=runs.Key(branch="0.2", seq=3, sub="uuid4:0"),
        kind=EntryKind.VALUE,
        name="uuid4",
        status=EntryStatus.FAILED,
        result='"x"',
        error=failure,
        attempts=4,
        wake_at=now + 5,
        started_at=now,
        finished_at=now + 1,
        attempt=1,
    )
    assert await store.checkpoint(lease, [written])
    [stored] = await store.journal(lease.run_id)
    assert stored.key == written.key
    assert (stored.kind, stored.name, stored.status) == (written.kind, "uuid4", written.status)
    assert (stored.result, stored.error, stored.attempts) == ('"x"', failure, 4)
    assert (stored.started_at, stored.finished_at) == pytest.approx((now, now + 1))
    assert stored.attempt == 1


async def test_the_journal_comes_back_in_commit_order(store: base.Store, worker: Worker) -> None:
    lease = (await leased(worker)).lease
    assert await store.checkpoint(lease, [entry("0", 2), entry("0.1", 1)])
    assert await store.checkpoint(lease, [entry("0", 1)])
    assert await store.checkpoint(lease, [entry("0", 1, sub="now:0", kind=EntryKind.VALUE)])
    assert await store.checkpoint(lease, [entry("0", 2, result='"updated"')])  # an update
    journal = await store.journal(lease.run_id)
    assert keys(journal) == [("0", 2, ""), ("0.1", 1, ""), ("0", 1, ""), ("0", 1, "now:0")]
    assert journal[0].result == '"updated"'


async def test_checkpoint_records_logs_in_order(store: base.Store, worker: Worker) -> None:
    lease = (await leased(worker)).lease
    now = await store.now()
    lines = [
        base.LogLine(attempt=1, branch="0", seq=i, level="info", message=f"line {i}", at=now + i)
        for i in range(3)
    ]
    assert await store.checkpoint(lease, [], base.Progress(logs=lines[:2]))
    assert await store.checkpoint(lease, [], base.Progress(logs=lines[2:]))
    assert await store.logs(lease.run_id) == lines


async def test_checkpoint_metadata_sets_the_keys_it_carries_and_keeps_the_others(
    store: base.Store, worker: Worker
) -> None:
    lease = (await leased(worker)).lease
    assert await store.checkpoint(lease, [], base.Progress(metadata={"a": 1, "b": "x"}))
    assert await store.checkpoint(lease, [], base.Progress(metadata={"a": 2, "c": [1, 2]}))
    run = await store.get_run(lease.run_id)
    assert run is not None and run.metadata == {"a": 2, "b": "x", "c": [1, 2]}


async def test_checkpoint_metadata_replaces_the_value_of_each_key_it_carries(
    store: base.Store, worker: Worker
) -> None:
    # perdure.metadata.set(key, value) sets `key` to `value`: the worker sends the keys
    # set since the last checkpoint, and the stored object must match its own.
    lease = (await leased(worker)).lease
    assert await store.checkpoint(lease, [], base.Progress(metadata={"p": {"done": 1}, "n": 1}))
    assert await store.checkpoint(lease, [], base.Progress(metadata={"p": {"total": 9}, "n": None}))
    run = await store.get_run(lease.run_id)
    assert run is not None and run.metadata == {"p": {"total": 9}, "n": None}


async def test_checkpoint_writes_nothing_without_the_current_lease(
    store: base.Store, worker: Worker
) -> None:
    lease = (await leased(worker)).lease
    forged = base.Lease(run_id=lease.run_id, token="not-the-token")
    progress = base.Progress(
        logs=[base.LogLine(attempt=1, branch=None, seq=None, level="info", message="m", at=0.0)],
        metadata={"a": 1},
    )
    assert not await store.checkpoint(forged, [entry()], progress)
    assert await store.journal(lease.run_id) == []
    assert await store.logs(lease.run_id) == []
    run = await store.get_run(lease.run_id)
    assert run is not None and run.metadata == {}


async def test_checkpoints_committed_together_are_each_fenced_by_their_own_lease(
    store: base.Store, worker: Worker
) -> None:
    """Checkpoints of several runs in one batch (sent as one statement on PostgreSQL):
    each is written only if its own lease is held, a stale lease of a run whose newer
    lease writes beside it included, and a key written twice keeps the later entry."""
    first, second = await leased(worker), await leased(worker)
    assert await store.release(second.lease, 0.0, None)
    again = await worker.claim_one()
    assert again.lease.run_id == second.lease.run_id  # `second.lease` is stale now
    pending = entry("0", 2, result=None, status=EntryStatus.PENDING)
    outcomes = await one_batch(
        store,
        lambda: store.checkpoint(first.lease, [entry("0", 1), entry("0.1", 1)]),
        lambda: store.checkpoint(second.lease, [entry("0", 1, result='"stale"')]),
        lambda: store.checkpoint(again.lease, [entry("0", 1, result='"fresh"')]),
        lambda: store.checkpoint(first.lease, [pending]),
        lambda: store.checkpoint(first.lease, [entry("0", 2, result='"done"')]),
    )
    assert outcomes == [True, False, True, True, True]
    journal = await store.journal(first.lease.run_id)
    assert [(e.key.branch, e.key.seq, e.status, e.result) for e in journal] == [
        ("0", 1, EntryStatus.COMPLETED, '"ok"'),
        ("0.1", 1, EntryStatus.COMPLETED, '"ok"'),
        ("0", 2, EntryStatus.COMPLETED, '"done"'),
    ]
    [only] = await store.journal(again.lease.run_id)
    assert only.result == '"fresh"'


async def test_a_wait_without_deadline_is_checkpointed_alone_or_beside_others(
    store: base.Store, worker: Worker
) -> None:
    """A sleep of no end wakes at infinity, a float JSON has no number for: checkpoints
    of such entries are written alone and in a batch with others (one statement on
    PostgreSQL, its parameters a JSON array)."""
    first, second = await leased(worker), await leased(worker)
    endless = dataclasses.replace(
        entry("0", 1, result=None, kind=EntryKind.SLEEP, status=EntryStatus.PENDING),
        wake_at=math.inf,
    )
    assert await store.checkpoint(first.lease, [endless])
    outcomes = await one_batch(
        store,
        lambda: store.checkpoint(first.lease, [dataclasses.replace(endless, key=Key("0", 2))]),
        lambda: store.checkpoint(second.lease, [endless, entry("0", 2)]),
    )
    assert outcomes == [True, True]
    for run_id, seqs in ((first.lease.run_id, [1, 2]), (second.lease.run_id, [1, 2])):
        journal = await store.journal(run_id)
        assert [e.key.seq for e in journal] == seqs
        assert journal[0].wake_at == math.inf


# --- suspend, release, retry_later, finish ----------------------------------------------------


async def test_suspend_makes_the_run_wait_until_due_then_resume_the_same_attempt(
    store: base.Store, worker: Worker
) -> None:
    claim = await leased(worker)
    assert await store.checkpoint(claim.lease, [entry("0", 1)])
    due = await store.now() + 0.05
    assert await store.suspend(claim.lease, due, 1.5, None)
    run = await store.get_run(claim.lease.run_id)
    assert run is not None and run.status is RunStatus.WAITING
    again = (await eventually(worker.claim, "the waiting run is claimable once due"))[0]
    assert again.db_now >= due
    assert again.lease.run_id == claim.lease.run_id
    assert (again.attempt, again.resumed_from) == (1, RunStatus.WAITING)
    assert again.executed_seconds == pytest.approx(1.5)
    assert keys(again.journal) == [("0", 1, "")]


async def test_a_suspended_run_is_not_claimable_before_its_due_time(
    store: base.Store, worker: Worker
) -> None:
    claim = await leased(worker)
    assert await store.suspend(claim.lease, await store.now() + 3600, 0.0, None)
    assert await worker.claim() == []


async def test_suspend_ends_the_lease(store: base.Store, worker: Worker) -> None:
    claim = await leased(worker)
    assert await store.suspend(claim.lease, await store.now() + 3600, 0.0, None)
    assert not await store.checkpoint(claim.lease, [entry()])
    assert not await store.finish(claim.lease, RunStatus.COMPLETED, "null", None, [], None)
    run = await store.get_run(claim.lease.run_id)
    assert run is not None and run.status is RunStatus.WAITING


async def test_suspend_records_the_progress_it_carries(store: base.Store, worker: Worker) -> None:
    claim = await leased(worker)
    progress = base.Progress(metadata={"stage": "waiting"})
    assert await store.suspend(claim.lease, await store.now() + 3600, 0.0, progress)
    run = await store.get_run(claim.lease.run_id)
    assert run is not None and run.metadata == {"stage": "waiting"}


async def test_release_gives_the_run_back_at_once_for_the_same_attempt(
    store: base.Store, worker: Worker
) -> None:
    claim = await leased(worker)
    assert await store.release(claim.lease, 2.0, None)
    run = await store.get_run(claim.lease.run_id)
    assert run is not None and run.status is RunStatus.QUEUED
    again = await worker.claim_one()
    assert (again.lease.run_id, again.attempt) == (claim.lease.run_id, 1)
    assert again.resumed_from is RunStatus.QUEUED
    assert again.executed_seconds == pytest.approx(2.0)
    assert not await store.checkpoint(claim.lease, [entry()])


async def _with_a_failed_step(store: base.Store, worker: Worker) -> tuple[base.Claim, runs.Entry]:
    """A leased run whose journal holds a completed step (0, 1) and a failed one (0, 2),
    the entry a retry drops."""
    claim = await leased(worker)
    kept, dropped = entry("0", 1), entry("0", 2, status=EntryStatus.FAILED, result=None)
    assert await store.checkpoint(claim.lease, [kept, dropped])
    return claim, dropped


async def test_retry_later_ends_the_attempt_and_drops_the_given_entries(
    store: base.Store, worker: Worker
) -> None:
    claim, dropped = await _with_a_failed_step(store, worker)
    error = runs.RunError(type="ValueError", message="boom", traceback="tb")
    assert await store.retry_later(claim.lease, error, 0.05, [dropped.key], None)
    run = await store.get_run(claim.lease.run_id)
    assert run is not None
    assert (run.status, run.error) == (RunStatus.RETRYING, error)
    assert keys(await store.journal(run.id)) == [("0", 1, "")]
    ended_at = (await store.events(run.id))[-1].at
    again = (await eventually(worker.claim, "the retrying run is claimable after its delay"))[0]
    assert again.db_now >= ended_at + 0.05 - 1e-6
    assert (again.attempt, again.resumed_from) == (2, RunStatus.RETRYING)
    assert again.executed_seconds == 0
    assert keys(again.journal) == [("0", 1, "")]


async def test_a_retrying_run_is_not_claimable_before_its_delay(
    store: base.Store, worker: Worker
) -> None:
    claim = await leased(worker)
    error = runs.RunError(type="ValueError", message="boom")
    assert await store.retry_later(claim.lease, error, 3600, [], None)
    assert await worker.claim() == []


@pytest.mark.parametrize(
    "status", sorted(runs.TERMINAL, key=lambda s: s.value), ids=lambda s: s.value
)
async def test_finish_ends_the_run_with_its_output_or_error_and_keeps_its_journal(
    store: base.Store, worker: Worker, status: RunStatus
) -> None:
    claim = await leased(worker)
    kept, dropped = entry("0", 1), entry("0", 2)
    assert await store.checkpoint(claim.lease, [kept, dropped])
    completed = status is RunStatus.COMPLETED
    output = '{"answer": 42}' if completed else None
    error = None if completed else runs.RunError(type="Boom", message="it broke", traceback="tb")
    assert await store.finish(claim.lease, status, output, error, [dropped.key], None)
    run = await store.get_run(claim.lease.run_id)
    assert run is not None
    assert run.status is status
    assert run.output == ({"answer": 42} if completed else None)
    assert run.error == error
    assert run.finished_at is not None
    # The entries to drop stay for the trace (retry_run deletes them).
    assert keys(await store.journal(run.id)) == [("0", 1, ""), ("0", 2, "")]
    assert await worker.claim() == []
    assert not await store.checkpoint(claim.lease, [entry("0", 3)])


async def test_a_lease_ends_once_when_two_of_its_transitions_are_committed_together(
    store: base.Store, worker: Worker
) -> None:
    claim = await leased(worker)
    outcomes = await one_batch(
        store,
        lambda: store.finish(claim.lease, RunStatus.COMPLETED, "1", None, [], None),
        lambda: store.release(claim.lease, 0.0, None),
    )
    assert outcomes == [True, False]
    run = await store.get_run(claim.lease.run_id)
    assert run is not None and (run.status, run.output) == (RunStatus.COMPLETED, 1)
    events = await store.events(claim.lease.run_id)
    assert [e.to_status for e in events] == ["queued", "running", "completed"]


async def test_entries_a_retry_drops_are_gone_for_a_claim_committed_with_it(
    store: base.Store, worker: Worker
) -> None:
    claim, dropped = await _with_a_failed_step(store, worker)
    error = runs.RunError(type="ValueError", message="boom")
    retried, claims = await one_batch(
        store,
        lambda: store.retry_later(claim.lease, error, 0, [dropped.key], None),
        worker.claim,
    )
    assert retried is True
    assert [(c.lease.run_id, c.attempt) for c in claims] == [(claim.lease.run_id, 2)]
    assert keys(claims[0].journal) == [("0", 1, "")]


async def test_every_transition_is_recorded_in_order(store: base.Store, worker: Worker) -> None:
    new = new_run()
    await store.create_run(new)
    lease = (await worker.claim_one()).lease
    assert await store.suspend(lease, await store.now(), 0.0, None)
    lease = (await worker.claim_one()).lease
    assert await store.release(lease, 0.0, None)
    lease = (await worker.claim_one()).lease
    error = runs.RunError(type="ValueError", message="boom")
    assert await store.retry_later(lease, error, 0, [], None)
    lease = (await worker.claim_one()).lease
    assert await store.finish(lease, RunStatus.FAILED, None, error, [], None)
    await store.retry_run(new.id, 3600)
    lease = (await worker.claim_one()).lease
    assert await store.finish(lease, RunStatus.COMPLETED, "1", None, [], None)
    events = await store.events(new.id)
    assert [(e.from_status, e.to_status, e.attempt) for e in events] == [
        (None, "queued", 0),
        ("queued", "running", 1),
        ("running", "waiting", 1),
        ("waiting", "running", 1),
        ("running", "queued", 1),
        ("queued", "running", 1),
        ("running", "retrying", 1),
        ("retrying", "running", 2),
        ("running", "failed", 2),
        ("failed", "queued", 2),
        ("queued", "running", 3),
        ("running", "completed", 3),
    ]
    assert [e.worker_id for e in events if e.to_status == "running"] == [worker.id] * 5
    # A leased run's transition records the worker that held it, and why it ended.
    assert [e.worker_id for e in events if e.from_status == "running"] == [worker.id] * 5
    assert [(e.to_status, e.detail) for e in events if e.from_status == "running"] == [
        ("waiting", None),
        ("queued", "released at worker shutdown"),
        ("retrying", "ValueError: boom"),
        ("failed", "ValueError: boom"),
        ("completed", None),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)


async def test_a_delayed_run_records_its_first_status(store: base.Store) -> None:
    new = new_run(delay=3600)
    await store.create_run(new)
    assert [(e.from_status, e.to_status) for e in await store.events(new.id)] == [(None, "delayed")]
