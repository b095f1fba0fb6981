"""Token transactions, written once against `ops.Tx`: create a token, wait on one,
complete one (waking every run waiting on it), list them.

A wait on a token is a journal entry of kind 'wait' named after the token. Completing the
token settles those entries in the same transaction, so a run that replays finds the data
in the journal it was claimed with; a run still in memory is woken by its worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from perdure import exceptions, runs
from perdure.store import base, ops

OPEN = ("waiting", "completed")  # statuses a token's idempotency key still points at


@dataclass(frozen=True, kw_only=True)
class WaitState:
    """Where a token stands for a run waiting on it."""

    status: str  # waiting | completed | timed_out | canceled
    data: str | None = None  # JSON text of the completion data
    timeout_at: float | None = None


def create_token(
    tx: ops.Tx,
    lease: base.Lease,
    entry: runs.Entry,
    token_id: str,
    timeout_at: float | None,
    tags: list[str],
    key: str | None,
) -> str | None:
    """Create the token and the journal entry that records it; None if the lease is lost.
    With an idempotency key held by an open token, that token is recorded instead."""
    if not ops.lease_held(tx, lease):
        return None
    chosen = token_id
    if key is not None:
        held = ops.one(tx, tx.q.TOKEN_BY_KEY, {"key": key})
        if held is not None and held["status"] in OPEN:
            chosen = held["id"]
        elif held is not None:
            tx.run(tx.q.RELEASE_TOKEN_KEY, {"id": held["id"]})
    if chosen == token_id and ops.one(tx, tx.q.GET_TOKEN, {"id": token_id}) is None:
        tx.run(
            tx.q.INSERT_TOKEN,
            {
                "id": token_id,
                "run_id": lease.run_id,
                "timeout_at": timeout_at,
                "tags": json.dumps(tags),
                "key": key,
            },
        )
    recorded = runs.Entry(
        key=entry.key,
        kind=entry.kind,
        name=entry.name,
        status=entry.status,
        result=json.dumps({"id": chosen}),
        started_at=entry.started_at,
        finished_at=entry.finished_at,
        attempt=entry.attempt,
    )
    tx.run(tx.q.UPSERT_ENTRY, ops.entry_params(lease.run_id, recorded))
    return chosen


def wait_token(tx: ops.Tx, lease: base.Lease, entry: runs.Entry) -> WaitState | None:
    """Record the wait (pending, or settled when the token already is); None if the lease
    is lost. A waiting token past its timeout times out here."""
    if not ops.lease_held(tx, lease):
        return None
    row = ops.one(tx, tx.q.GET_TOKEN, {"id": entry.name})
    if row is None:
        raise exceptions.PayloadError(f"no token has the id {entry.name!r}")
    status = row["status"]
    if status == "waiting" and row["timeout_at"] is not None and row["timeout_at"] <= tx.now:
        tx.run(
            tx.q.SET_TOKEN_STATUS,
            {"id": row["id"], "status": "timed_out", "data": None},
        )
        status = "timed_out"
    if status == "waiting":
        pending = _entry(entry, runs.EntryStatus.PENDING, wake_at=row["timeout_at"])
        tx.run(tx.q.UPSERT_ENTRY, ops.entry_params(lease.run_id, pending))
        return WaitState(status=status, timeout_at=row["timeout_at"])
    completed = status == "completed"
    settled = _entry(
        entry,
        runs.EntryStatus.COMPLETED if completed else runs.EntryStatus.FAILED,
        result=row["data"] if completed else None,
        error=None if completed else timeout_error(entry.name, status),
        finished_at=tx.now,
    )
    tx.run(tx.q.UPSERT_ENTRY, ops.entry_params(lease.run_id, settled))
    return WaitState(status=status, data=row["data"])


def _entry(entry: runs.Entry, status: runs.EntryStatus, **changes: Any) -> runs.Entry:
    fields = {**entry.__dict__, "status": status, **changes}
    return runs.Entry(**fields)


def timeout_error(token: str, status: str) -> dict[str, Any]:
    message = f"token {token} timed out" if status == "timed_out" else f"token {token} was canceled"
    return {
        "type": "WaitTimeout",
        "module": "perdure.exceptions",
        "qualname": "WaitTimeout",
        "message": message,
        "traceback": None,
        "args": [message],
    }


def _settle(
    tx: ops.Tx, run_id: str, key: runs.Key, token: str, status: str, data: str | None
) -> None:
    """Mark a wait entry completed (with the data) or failed (timed out / canceled)."""
    completed = status == "completed"
    tx.run(
        tx.q.SETTLE_WAIT,
        {
            "run_id": run_id,
            "branch": key.branch,
            "seq": key.seq,
            "status": "completed" if completed else "failed",
            "result": data if completed else None,
            "error": None if completed else json.dumps(timeout_error(token, status)),
        },
    )


def complete_token(tx: ops.Tx, token_id: str, data: str) -> list[str]:
    """Complete a waiting token: the first completion wins. Settles every wait on it and
    wakes the runs that wait; returns their ids."""
    row = ops.one(tx, tx.q.GET_TOKEN_FOR_UPDATE, {"id": token_id})
    if row is None:
        raise exceptions.TokenNotFound(f"no token has the id {token_id!r}")
    if row["status"] == "waiting" and row["timeout_at"] is not None and row["timeout_at"] <= tx.now:
        raise exceptions.InvalidTransition(
            f"token {token_id} timed out; it can no longer be completed"
        )
    if row["status"] != "waiting":
        raise exceptions.InvalidTransition(_settled_message(token_id, row["status"]))
    tx.run(tx.q.SET_TOKEN_STATUS, {"id": token_id, "status": "completed", "data": data})
    woken = []
    for wait in tx.rows(tx.q.PENDING_WAITS, {"token": token_id}):
        key = runs.Key(branch=wait["branch"], seq=wait["seq"])
        _settle(tx, wait["run_id"], key, token_id, "completed", data)
        tx.run(tx.q.WAKE_RUN, {"run_id": wait["run_id"]})
        woken.append(wait["run_id"])
    return woken


def _settled_message(token_id: str, status: str) -> str:
    if status == "completed":
        return f"token {token_id} was already completed; the first completion wins"
    done = "timed out" if status == "timed_out" else "was canceled"
    return f"token {token_id} {done}; it can no longer be completed"


def cancel_run_tokens(tx: ops.Tx, run_id: str) -> None:
    tx.run(tx.q.CANCEL_RUN_TOKENS, {"run_id": run_id})


def get_token(tx: ops.Tx, token_id: str) -> dict[str, Any] | None:
    row = ops.one(tx, tx.q.GET_TOKEN, {"id": token_id})
    return None if row is None else dict(row)


def list_tokens(
    tx: ops.Tx, status: str | None, run_id: str | None, tag: str | None, limit: int
) -> list[dict[str, Any]]:
    params = {"status": status, "run_id": run_id, "tag": tag, "limit": limit}
    return [dict(r) for r in tx.rows(tx.q.LIST_TOKENS, params)]


def secret(tx: ops.Tx, generated: str) -> str:
    """The secret that signs token URLs: kept in the store so every server shares it."""
    tx.run(tx.q.PUT_META_ONCE, {"key": "secret_key", "value": generated})
    row = ops.one(tx, tx.q.GET_META, {"key": "secret_key"})
    assert row is not None
    return str(row["value"])
