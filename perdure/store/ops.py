"""The store's transactions, written once against `Tx`: a connection inside a transaction.

Each function here runs inside one transaction the backend opened (and may batch with
others: group commit). Backends provide `Tx` and the clock; the logic stays here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from perdure import exceptions, runs
from perdure.store import base

Row = Mapping[str, Any]


class Tx(Protocol):
    """A connection inside a transaction, with `now` (the database's clock, read once per
    transaction) and `q`, the named queries of its backend's dialect."""

    q: Any

    @property
    def now(self) -> float: ...

    def rows(self, query: str, params: Mapping[str, Any]) -> Sequence[Row]: ...
    def values(self, query: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        """Rows as plain tuples, in the query's column order: for reads of many rows."""
        ...

    def run(self, query: str, params: Mapping[str, Any]) -> int: ...


def one(tx: Tx, query: str, params: Mapping[str, Any]) -> Row | None:
    found = tx.rows(query, params)
    return found[0] if found else None


# --- reading --------------------------------------------------------------------------


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def run_from_row(row: Row) -> runs.Run:
    created = _time(row["created_at"])
    assert created is not None
    return runs.Run(
        id=row["id"],
        task_id=row["task_id"],
        status=runs.RunStatus(row["status"]),
        payload=_json(row["payload"]),
        output=_json(row["output"]),
        error=runs.RunError.from_json(_json(row["error"])),
        attempts=row["attempts"],
        recoveries=row["recoveries"],
        tags=json.loads(row["tags"]),
        metadata=json.loads(row["metadata"]),
        parent_id=row["parent_id"],
        root_id=row["root_id"],
        idempotency_key=row["idempotency_key"],
        version=row["version"],
        queue=row["queue"],
        concurrency_key=row["concurrency_key"],
        priority=row["priority"],
        created_at=created,
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
    )


_KINDS = {kind.value: kind for kind in runs.EntryKind}
_STATUSES = {status.value: status for status in runs.EntryStatus}


def entry_from_row(row: Row) -> runs.Entry:
    return runs.Entry(
        key=runs.Key(branch=row["branch"], seq=row["seq"], sub=row["sub"]),
        kind=_KINDS[row["kind"]],
        name=row["name"],
        status=_STATUSES[row["status"]],
        result=row["result"],
        error=_json(row["error"]),
        attempts=row["attempts"],
        wake_at=row["wake_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempt=row["attempt"],
        order=row["ord"],
    )


def get_run(tx: Tx, run_id: str) -> runs.Run | None:
    row = one(tx, tx.q.GET_RUN, {"id": run_id})
    return None if row is None else run_from_row(row)


def require_run(tx: Tx, run_id: str) -> runs.Run:
    run = get_run(tx, run_id)
    if run is None:
        raise exceptions.RunNotFound(f"no run has the id {run_id!r}")
    return run


def journal(tx: Tx, run_id: str) -> list[runs.Entry]:
    """A run's whole journal (read at every claim: a long journal makes it the claim's
    main cost, hence plain tuples, in ENTRY_COLUMNS' order)."""
    entries = []
    Entry, Key, kinds, statuses = runs.Entry, runs.Key, _KINDS, _STATUSES
    for values in tx.values(tx.q.LIST_JOURNAL, {"run_id": run_id}):
        order, branch, seq, sub, kind, name, status, result, error, attempts = values[:10]
        wake_at, started_at, finished_at, attempt = values[10:]
        entries.append(
            Entry(
                key=Key(branch=branch, seq=seq, sub=sub),
                kind=kinds[kind],
                name=name,
                status=statuses[status],
                result=result,
                error=None if error is None else json.loads(error),
                attempts=attempts,
                wake_at=wake_at,
                started_at=started_at,
                finished_at=finished_at,
                attempt=attempt,
                order=order,
            )
        )
    return entries


# --- events ----------------------------------------------------------------------------


def record_event(
    tx: Tx,
    run_id: str,
    from_status: str | None,
    to_status: str,
    attempt: int,
    worker_id: str | None = None,
    detail: str | None = None,
) -> None:
    tx.run(
        tx.q.INSERT_EVENT,
        {
            "run_id": run_id,
            "at": tx.now,
            "from_status": from_status,
            "to_status": to_status,
            "attempt": attempt,
            "worker_id": worker_id,
            "detail": detail,
        },
    )


# --- creating runs -----------------------------------------------------------------------


def create_run(tx: Tx, new: base.NewRun) -> tuple[str, bool]:
    if new.idempotency_key is not None:
        tx.rows(tx.q.LOCK_IDEMPOTENCY_KEY, {"task_id": new.task_id, "key": new.idempotency_key})
        held = one(tx, tx.q.FIND_KEY, {"task_id": new.task_id, "key": new.idempotency_key})
        if held is not None and held["expires_at"] > tx.now:
            return held["run_id"], True
        tx.run(
            tx.q.HOLD_KEY,
            {
                "task_id": new.task_id,
                "key": new.idempotency_key,
                "run_id": new.id,
                "expires_at": tx.now + new.idempotency_key_ttl,
            },
        )
    delayed = new.delay is not None and new.delay > 0
    status = runs.RunStatus.DELAYED if delayed else runs.RunStatus.QUEUED
    tx.run(
        tx.q.INSERT_RUN,
        {
            "id": new.id,
            "task_id": new.task_id,
            "queue": new.queue,
            "concurrency_key": new.concurrency_key,
            "priority": new.priority,
            "status": status.value,
            "payload": new.payload,
            "tags": json.dumps(new.tags),
            "parent_id": new.parent_id,
            "root_id": new.root_id,
            "idempotency_key": new.idempotency_key,
            "version": new.version,
            "now": tx.now,
            "due_at": tx.now + (new.delay or 0),
            "ttl_expires_at": None if new.ttl is None else tx.now + new.ttl,
            "parent_branch": None if new.parent_entry is None else new.parent_entry.branch,
            "parent_seq": None if new.parent_entry is None else new.parent_entry.seq,
            "batch_index": new.batch_index,
        },
    )
    record_event(tx, new.id, None, status.value, 0)
    return new.id, False


# --- claiming ----------------------------------------------------------------------------


def claim(
    tx: Tx,
    worker_id: str,
    task_ids: list[str],
    version: str | None,
    limit: int,
    max_recoveries: int,
    token: Any,
) -> tuple[list[base.Claim], bool]:
    """Take up to `limit` runs: orphans of dead workers first, then due runs by priority
    and due time, as many per limited (queue, concurrency key) as its free slots allow.
    `token` is a callable returning a fresh lease token. Also says whether runs were left
    because another claim held their slots (worth claiming again once it commits)."""
    if not tx.rows(tx.q.WORKER_ALIVE, {"worker_id": worker_id}):
        return [], False  # declared dead or stopped: it may hold nothing more
    expire(tx)
    params = {
        "task_ids": json.dumps(task_ids),
        "version": version,
        "now": tx.now,
        "worker_id": worker_id,
    }
    orphans = [r["id"] for r in tx.rows(tx.q.ORPHANED_RUNS, {**params, "limit": limit})]
    due: list[str] = []
    contended = False
    room = limit - len(orphans)
    if room > 0:
        found = tx.rows(tx.q.CLAIMABLE_RUNS, {**params, "limit": room, "scan": room * 4})
        due, contended = _admit(tx, found)
    taken = (_take(tx, i, worker_id, version, max_recoveries, token()) for i in orphans + due)
    return [c for c in taken if c], contended


def _admit(tx: Tx, found: Sequence[Row]) -> tuple[list[str], bool]:
    """The found runs that fit their slots, counted under the slots' lock (the count the
    query made may be stale by the time it returns: another worker may have claimed since)."""
    free: dict[tuple[str, str | None], int] = {}
    admitted, contended = [], False
    for row in found:
        if row["concurrency_limit"] is None:
            admitted.append(row["id"])
            continue
        slot = (row["queue"], row["concurrency_key"])
        if slot not in free:
            params = {"queue": slot[0], "ckey": slot[1]}
            if tx.rows(tx.q.LOCK_SLOT, params)[0]["taken"]:
                running = tx.rows(tx.q.RUNNING_IN_SLOT, params)[0]["n"]
                free[slot] = row["concurrency_limit"] - running
            else:
                free[slot], contended = 0, True
        if free[slot] > 0:
            free[slot] -= 1
            admitted.append(row["id"])
    return admitted, contended


def expire(tx: Tx) -> None:
    """End queued and delayed runs whose ttl passed before any worker took them."""
    error = runs.RunError(type="expired", message="the run's ttl passed before it started")
    for row in tx.rows(tx.q.EXPIRED_RUNS, {"now": tx.now}):
        tx.run(tx.q.EXPIRE, {"id": row["id"], "now": tx.now, "error": json.dumps(error.to_json())})
        tx.run(tx.q.FREE_KEY, {"run_id": row["id"]})
        record_event(tx, row["id"], None, "expired", 0, None, "ttl passed")
        _ended(tx, row["id"])


def _take(
    tx: Tx, run_id: str, worker_id: str, version: str | None, max_recoveries: int, token: str
) -> base.Claim | None:
    row = one(tx, tx.q.GET_CLAIM_ROW, {"id": run_id})
    assert row is not None
    status = runs.RunStatus(row["status"])
    takeover = status is runs.RunStatus.RUNNING
    # Read afresh now that the run is locked: the query that found it may have seen an
    # older state (on PostgreSQL, another worker may have taken it over meanwhile).
    if takeover and (
        row["lease_worker"] == worker_id
        or tx.rows(tx.q.WORKER_ALIVE, {"worker_id": row["lease_worker"]})
    ):
        return None
    if not takeover and status not in CLAIMABLE:
        return None
    attempt = row["attempts"] if takeover else row["next_attempt"]
    # Crashes in a row: a clean suspension, release or new attempt shows progress.
    recoveries = row["recoveries"] + 1 if takeover else 0
    if takeover and recoveries > max_recoveries:
        _end_orphan(tx, row, recoveries, max_recoveries)
        return None
    tx.run(
        tx.q.TAKE_LEASE,
        {
            "id": run_id,
            "token": token,
            "worker_id": worker_id,
            "attempt": attempt,
            "recoveries": recoveries,
            "version": version,
            "now": tx.now,
            "executed_seconds": row["executed_seconds"] if attempt == row["attempts"] else 0,
        },
    )
    detail = "takeover" if takeover else None
    record_event(tx, run_id, status.value, "running", attempt, worker_id, detail)
    return base.Claim(
        lease=base.Lease(run_id=run_id, token=token),
        task_id=row["task_id"],
        payload=row["payload"],
        attempt=attempt,
        recoveries=recoveries,
        tags=json.loads(row["tags"]),
        parent_id=row["parent_id"],
        root_id=row["root_id"],
        idempotency_key=row["idempotency_key"],
        version=row["version"] or version,
        executed_seconds=row["executed_seconds"] if attempt == row["attempts"] else 0.0,
        resumed_from=status,
        cancel_requested=row["cancel_requested_at"] is not None,
        journal=journal(tx, run_id),
        db_now=tx.now,
    )


CLAIMABLE = frozenset(
    {runs.RunStatus.QUEUED, runs.RunStatus.DELAYED, runs.RunStatus.RETRYING, runs.RunStatus.WAITING}
)


def _end_orphan(tx: Tx, row: Row, recoveries: int, max_recoveries: int) -> None:
    """A run whose worker died too often in a row: it ends, so crash loops end."""
    status = runs.RunStatus.FAILED
    error = runs.RunError(
        type="WorkerCrashed",
        message=f"the run's worker died {recoveries} times in a row "
        f"(max_recoveries={max_recoveries}); its last step may crash the process",
    )
    token = "orphan"
    tx.run(tx.q.SET_LEASE_TOKEN, {"token": token, "id": row["id"]})
    _finish(tx, base.Lease(run_id=row["id"], token=token), status, None, error, [], None)


# --- writes of a leased run ------------------------------------------------------------------


def lease_held(tx: Tx, lease: base.Lease) -> bool:
    return bool(tx.rows(tx.q.CHECK_LEASE, {"run_id": lease.run_id, "token": lease.token}))


def entry_params(run_id: str, e: runs.Entry) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "branch": e.key.branch,
        "seq": e.key.seq,
        "sub": e.key.sub,
        "kind": e.kind.value,
        "name": e.name,
        "status": e.status.value,
        "result": e.result,
        "error": None if e.error is None else json.dumps(e.error),
        "attempts": e.attempts,
        "wake_at": e.wake_at,
        "started_at": e.started_at,
        "finished_at": e.finished_at,
        "attempt": e.attempt,
    }


def _progress(tx: Tx, run_id: str, progress: base.Progress | None) -> None:
    if progress is None:
        return
    for line in progress.logs:
        tx.run(
            tx.q.INSERT_LOG,
            {
                "run_id": run_id,
                "attempt": line.attempt,
                "branch": line.branch,
                "seq": line.seq,
                "level": line.level,
                "message": line.message,
                "at": line.at,
            },
        )
    if progress.metadata is not None:
        # Each key given replaces that key's value (None included); others are kept.
        row = one(tx, tx.q.GET_METADATA, {"run_id": run_id})
        merged = {**json.loads(row["metadata"] if row else "{}"), **progress.metadata}
        tx.run(tx.q.SET_METADATA, {"run_id": run_id, "metadata": json.dumps(merged)})


def checkpoint(
    tx: Tx, lease: base.Lease, entries: list[runs.Entry], progress: base.Progress | None
) -> bool:
    """Entries' `result` must already be JSON text (or None)."""
    if not lease_held(tx, lease):
        return False
    for entry in entries:
        tx.run(tx.q.UPSERT_ENTRY, entry_params(lease.run_id, entry))
    _progress(tx, lease.run_id, progress)
    return True


def _transition(
    tx: Tx,
    lease: base.Lease,
    query: str,
    params: dict[str, Any],
    to_status: str,
    detail: str | None,
) -> bool:
    state = one(tx, tx.q.GET_RUN_STATE, {"id": lease.run_id})
    if state is None or state["lease_token"] != lease.token:
        return False
    tx.run(query, {"run_id": lease.run_id, "token": lease.token, "now": tx.now, **params})
    record_event(
        tx,
        lease.run_id,
        state["status"],
        to_status,
        state["attempts"],
        state["lease_worker"],
        detail,
    )
    return True


def suspend(
    tx: Tx,
    lease: base.Lease,
    due_at: float,
    executed: float,
    progress: base.Progress | None,
    waits: list[runs.Key] | None = None,
) -> bool:
    if waits and settled_waits(tx, [(lease.run_id, k) for k in waits]):
        due_at = tx.now  # what it waits on was settled meanwhile: wake at once
    params = {"due_at": due_at, "executed_seconds": executed}
    if not _transition(tx, lease, tx.q.SUSPEND, params, "waiting", None):
        return False
    _progress(tx, lease.run_id, progress)
    return True


def settled_waits(tx: Tx, waits: list[tuple[str, runs.Key]]) -> list[tuple[str, runs.Key]]:
    """Which of these waits (run id, journal key) are no longer pending."""
    given = json.dumps([[run_id, k.branch, k.seq] for run_id, k in waits])
    return [
        (r["run_id"], runs.Key(branch=r["branch"], seq=r["seq"]))
        for r in tx.rows(tx.q.SETTLED_WAITS, {"waits": given})
    ]


def release(tx: Tx, lease: base.Lease, executed: float, progress: base.Progress | None) -> bool:
    params = {"executed_seconds": executed}
    if not _transition(tx, lease, tx.q.RELEASE, params, "queued", "released at worker shutdown"):
        return False
    _progress(tx, lease.run_id, progress)
    return True


def _drop(tx: Tx, run_id: str, keys: list[runs.Key]) -> None:
    for key in keys:
        tx.run(
            tx.q.DELETE_ENTRY,
            {"run_id": run_id, "branch": key.branch, "seq": key.seq, "sub": key.sub},
        )


def retry_later(
    tx: Tx,
    lease: base.Lease,
    error: runs.RunError,
    delay: float,
    drop: list[runs.Key],
    progress: base.Progress | None,
) -> bool:
    params = {"due_at": tx.now + delay, "error": json.dumps(error.to_json())}
    detail = f"{error.type}: {error.message}"
    if not _transition(tx, lease, tx.q.RETRY_LATER, params, "retrying", detail):
        return False
    _drop(tx, lease.run_id, drop)
    _progress(tx, lease.run_id, progress)
    return True


def _finish(
    tx: Tx,
    lease: base.Lease,
    status: runs.RunStatus,
    output: str | None,
    error: runs.RunError | None,
    drop: list[runs.Key],
    progress: base.Progress | None,
) -> bool:
    params = {
        "status": status.value,
        "output": output,
        "error": None if error is None else json.dumps(error.to_json()),
        "escaped": json.dumps([[k.branch, k.seq, k.sub] for k in drop]) if drop else None,
    }
    detail = None if error is None else f"{error.type}: {error.message}"
    if not _transition(tx, lease, tx.q.FINISH, params, status.value, detail):
        return False
    if status in runs.KEY_FREEING:
        tx.run(tx.q.FREE_KEY, {"run_id": lease.run_id})
    if status is runs.RunStatus.CANCELED:
        tx.run(tx.q.CANCEL_RUN_TOKENS, {"run_id": lease.run_id, "now": tx.now})
        _cancel_children(tx, lease.run_id)
    _progress(tx, lease.run_id, progress)
    _ended(tx, lease.run_id)
    return True


def _ended(tx: Tx, run_id: str) -> None:
    from perdure.store import children  # children builds on this module

    children.child_ended(tx, run_id)


def _cancel_children(tx: Tx, run_id: str) -> None:
    """A canceled parent cancels its unfinished children (and so theirs)."""
    from perdure.store import children

    for child in children.unfinished_children(tx, run_id):
        cancel_run(tx, child)


finish = _finish


# --- client transitions ---------------------------------------------------------------------


def cancel_run(tx: Tx, run_id: str) -> runs.Run:
    run = require_run(tx, run_id)
    if run.status.is_terminal:
        raise exceptions.InvalidTransition(
            f"run {run_id} is already {run.status.value}; only unfinished runs can be canceled"
        )
    if run.status is runs.RunStatus.RUNNING:
        tx.run(tx.q.REQUEST_CANCEL, {"id": run_id, "now": tx.now})
    elif run.status is runs.RunStatus.WAITING:
        # It started: wake it so its code gets CancelledError and may clean up.
        tx.run(tx.q.REQUEST_CANCEL_AND_WAKE, {"id": run_id, "now": tx.now})
    else:
        tx.run(tx.q.CANCEL_IDLE, {"id": run_id, "now": tx.now})
        tx.run(tx.q.FREE_KEY, {"run_id": run_id})
        tx.run(tx.q.CANCEL_RUN_TOKENS, {"run_id": run_id, "now": tx.now})
        record_event(tx, run_id, run.status.value, "canceled", run.attempts, None, "canceled")
        _ended(tx, run_id)
    _cancel_children(tx, run_id)
    return require_run(tx, run_id)


def retry_run(tx: Tx, run_id: str, key_ttl: float) -> runs.Run:
    run = require_run(tx, run_id)
    if run.status not in runs.RETRYABLE:
        raise exceptions.InvalidTransition(
            f"run {run_id} is {run.status.value}; only failed, timed_out or canceled runs "
            "can be retried"
        )
    escaped = one(tx, tx.q.GET_ESCAPED, {"id": run_id})
    if escaped is not None and escaped["escaped"]:
        keys = [runs.Key(branch=b, seq=s, sub=u) for b, s, u in json.loads(escaped["escaped"])]
        _drop(tx, run_id, keys)
    tx.run(tx.q.REQUEUE, {"id": run_id, "now": tx.now})
    if run.idempotency_key is not None:
        held = one(tx, tx.q.FIND_KEY, {"task_id": run.task_id, "key": run.idempotency_key})
        if held is None or held["expires_at"] <= tx.now:
            tx.run(
                tx.q.HOLD_KEY,
                {
                    "task_id": run.task_id,
                    "key": run.idempotency_key,
                    "run_id": run_id,
                    "expires_at": tx.now + key_ttl,
                },
            )
    record_event(tx, run_id, run.status.value, "queued", run.attempts, None, "retried")
    return require_run(tx, run_id)


def replay_run(
    tx: Tx, run_id: str, new_id: str, payload: str | None, before: runs.Key | None
) -> str:
    row = one(tx, tx.q.GET_RUN_ROW, {"id": run_id})
    if row is None:
        raise exceptions.RunNotFound(f"no run has the id {run_id!r}")
    new = base.NewRun(
        id=new_id,
        task_id=row["task_id"],
        queue=row["queue"],
        payload=row["payload"] if payload is None else payload,
        root_id=new_id,
        concurrency_key=row["concurrency_key"],
        priority=row["priority"],
        tags=json.loads(row["tags"]),
        version=row["version"],
    )
    create_run(tx, new)
    if before is not None:
        found = one(
            tx, tx.q.ENTRY_ORD, {"run_id": run_id, "branch": before.branch, "seq": before.seq}
        )
        if found is None:
            raise exceptions.InvalidTransition(
                f"run {run_id} has no journal entry at {before}; pick a position its trace shows"
            )
        tx.run(tx.q.COPY_ENTRIES, {"new_id": new_id, "run_id": run_id, "before_ord": found["ord"]})
    return new_id
