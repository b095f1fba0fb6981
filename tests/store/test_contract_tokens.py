"""Store contract: tokens, and the waits on them (runs on every backend)."""

from __future__ import annotations

import json
import math

import pytest

from perdure import exceptions, runs
from perdure.runs import EntryKind, EntryStatus, RunStatus
from perdure.store import base
from tests.store.support import Worker, entry, leased

WAIT_KEY = runs.Key(branch="0", seq=2)
CREATE = dict(kind=EntryKind.TOKEN, name="create_token", result=None)


def wait_entry(token: str, seq: int = 2) -> runs.Entry:
    return entry(seq=seq, kind=EntryKind.WAIT, name=token, status=EntryStatus.PENDING, result=None)


async def test_a_token_is_created_with_its_journal_entry(store: base.Store, worker: Worker):
    claim = await leased(worker)
    made = await store.create_token(claim.lease, entry(**CREATE), "tok_a", None, ["t"], None)
    assert made == "tok_a"
    row = await store.get_token("tok_a")
    assert row["status"] == "waiting" and row["run_id"] == claim.lease.run_id
    (recorded,) = await store.journal(claim.lease.run_id)
    assert recorded.kind is EntryKind.TOKEN and json.loads(recorded.result) == {"id": "tok_a"}


async def test_a_stale_lease_creates_no_token(store: base.Store, worker: Worker):
    claim = await leased(worker)
    stale = base.Lease(run_id=claim.lease.run_id, token="stale")
    assert await store.create_token(stale, entry(**CREATE), "tok_b", None, [], None) is None
    assert await store.get_token("tok_b") is None
    assert await store.journal(claim.lease.run_id) == []


async def test_an_idempotency_key_reuses_an_open_token(store: base.Store, worker: Worker):
    first = await leased(worker)
    assert await store.create_token(first.lease, entry(**CREATE), "tok_1", None, [], "k") == "tok_1"
    second = await leased(worker)
    assert (
        await store.create_token(second.lease, entry(**CREATE), "tok_2", None, [], "k") == "tok_1"
    )
    assert await store.get_token("tok_2") is None


async def test_completion_settles_the_wait_in_the_journal_and_wakes_the_run(
    store: base.Store, worker: Worker
):
    claim = await leased(worker)
    await store.create_token(claim.lease, entry(**CREATE), "tok_w", None, [], None)
    state = await store.wait_token(claim.lease, wait_entry("tok_w"))
    assert state.status == "waiting"
    assert await store.suspend(claim.lease, math.inf, 0.0, None, [WAIT_KEY])
    assert await worker.claim() == []  # waits with no deadline
    assert await store.complete_token("tok_w", '{"ok":true}') == [claim.lease.run_id]
    (again,) = await worker.claim()  # due at once
    wait = next(e for e in again.journal if e.kind is EntryKind.WAIT)
    assert wait.status is EntryStatus.COMPLETED and wait.result == '{"ok":true}'


async def test_a_completion_that_races_a_suspension_is_not_lost(store: base.Store, worker: Worker):
    claim = await leased(worker)
    await store.create_token(claim.lease, entry(**CREATE), "tok_r", None, [], None)
    await store.wait_token(claim.lease, wait_entry("tok_r"))
    await store.complete_token("tok_r", '"yes"')  # the run is still `running` here
    assert await store.suspend(claim.lease, math.inf, 0.0, None, [WAIT_KEY])
    (again,) = await worker.claim()
    assert again.lease.run_id == claim.lease.run_id


async def test_the_first_completion_wins(store: base.Store, worker: Worker):
    claim = await leased(worker)
    await store.create_token(claim.lease, entry(**CREATE), "tok_f", None, [], None)
    await store.complete_token("tok_f", '"first"')
    with pytest.raises(exceptions.InvalidTransition, match="first completion wins"):
        await store.complete_token("tok_f", '"second"')
    assert (await store.get_token("tok_f"))["data"] == '"first"'
    with pytest.raises(exceptions.TokenNotFound):
        await store.complete_token("tok_missing", "null")


async def test_a_token_past_its_timeout_cannot_be_completed_and_its_wait_fails(
    store: base.Store, worker: Worker
):
    claim = await leased(worker)
    now = await store.now()
    await store.create_token(claim.lease, entry(**CREATE), "tok_t", now - 1, [], None)
    with pytest.raises(exceptions.InvalidTransition, match="timed out"):
        await store.complete_token("tok_t", "null")
    state = await store.wait_token(claim.lease, wait_entry("tok_t"))
    assert state.status == "timed_out"
    wait = next(e for e in await store.journal(claim.lease.run_id) if e.kind is EntryKind.WAIT)
    assert wait.status is EntryStatus.FAILED and wait.error["type"] == "WaitTimeout"
    assert await store.settled_waits([(claim.lease.run_id, WAIT_KEY)]) == [
        (claim.lease.run_id, WAIT_KEY)
    ]


async def test_a_canceled_run_cancels_its_waiting_tokens(store: base.Store, worker: Worker):
    claim = await leased(worker)
    await store.create_token(claim.lease, entry(**CREATE), "tok_c", None, [], None)
    await store.finish(claim.lease, RunStatus.CANCELED, None, None, [], None)
    assert (await store.get_token("tok_c"))["status"] == "canceled"
    assert [t["id"] for t in await store.list_tokens("canceled", None, None, 10)] == ["tok_c"]


async def test_the_url_secret_is_generated_once_and_shared(store: base.Store):
    first = await store.secret("generated-first")
    assert await store.secret("generated-later") == first == "generated-first"
