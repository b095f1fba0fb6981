"""A leased run's transitions (suspend, release, retry_later, finish), written once against
`ops.Tx`: each ends its lease, records the event and, where the dialect has it, is one
statement whose answer is read once the batch was sent (`ops.Then`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from perdure import runs
from perdure.store import base, ops


def _transition(
    tx: ops.Tx,
    lease: base.Lease,
    queries: tuple[str, str | None],
    params: dict[str, Any],
    to_status: str,
    detail: str | None,
    then: Callable[[ops.Row], Any],
    drop: list[runs.Key] | None = None,
    free_key: bool = False,
) -> Any:
    """The leased run's transition, its event, and with them the journal entries to `drop`
    and (`free_key`) its idempotency key; the outcome is `then(state before)`, or False
    with nothing done when the lease is no longer held. Where the dialect has the
    transition as one statement (`X_WITH_EVENT`, PostgreSQL) that statement makes them
    all, in the batch's order, and only `then` waits for its answer (`ops.Then`): it writes
    nothing a later operation of the batch could read (progress, a parent's settlement,
    a canceled run's tokens and children). Elsewhere the state is read first and all of
    it is made at once."""
    update, with_event = queries
    fenced = {"run_id": lease.run_id, "token": lease.token, **params}
    if with_event is not None:
        keys = json.dumps([[k.branch, k.seq, k.sub] for k in drop]) if drop else None
        moved = tx.rows_later(
            with_event,
            {
                **fenced,
                "to_status": to_status,
                "detail": detail,
                "drop": keys,
                "free_key": free_key,
            },
        )

        def made() -> Any:
            found = moved()
            return then(found[0]) if found else False

        return ops.Then(made)
    state = ops.one(tx, tx.q.GET_RUN_STATE, {"id": lease.run_id})
    if state is None or state["lease_token"] != lease.token:
        return False
    tx.send(update, fenced)
    event = ops.event_params(
        lease.run_id, state["status"], to_status, state["attempts"], state["lease_worker"], detail
    )
    ops.record_event(tx, event)
    ops.drop_entries(tx, lease.run_id, drop or [])
    if free_key and state["idempotency_key"] is not None:
        held = {"task_id": state["task_id"], "key": state["idempotency_key"]}
        tx.send(tx.q.FREE_HELD_KEY, {**held, "run_id": lease.run_id})
    return then(state)


def _withwrite_progress(tx: ops.Tx, lease: base.Lease, progress: base.Progress | None) -> Any:
    """What a transition's `then` is when it writes its run's progress alone."""

    def then(_: ops.Row) -> bool:
        ops.write_progress(tx, lease.run_id, progress)
        return True

    return then


def suspend(
    tx: ops.Tx,
    lease: base.Lease,
    due_at: float,
    executed: float,
    progress: base.Progress | None,
    waits: list[runs.Key] | None = None,
) -> Any:
    if waits and ops.settled_waits(tx, [(lease.run_id, k) for k in waits]):
        due_at = tx.now  # what it waits on was settled meanwhile: wake at once
    params = {"due_at": due_at, "executed_seconds": executed}
    then = _withwrite_progress(tx, lease, progress)
    return _transition(
        tx, lease, (tx.q.SUSPEND, tx.q.SUSPEND_WITH_EVENT), params, "waiting", None, then
    )


def release(tx: ops.Tx, lease: base.Lease, executed: float, progress: base.Progress | None) -> Any:
    params = {"executed_seconds": executed}
    then = _withwrite_progress(tx, lease, progress)
    detail = "released at worker shutdown"
    return _transition(
        tx, lease, (tx.q.RELEASE, tx.q.RELEASE_WITH_EVENT), params, "queued", detail, then
    )


def retry_later(
    tx: ops.Tx,
    lease: base.Lease,
    error: runs.RunError,
    delay: float,
    drop: list[runs.Key],
    progress: base.Progress | None,
) -> Any:
    params = {"delay": delay, "error": json.dumps(error.to_json())}
    detail = f"{error.type}: {error.message}"
    queries = (tx.q.RETRY_LATER, tx.q.RETRY_LATER_WITH_EVENT)
    then = _withwrite_progress(tx, lease, progress)
    return _transition(tx, lease, queries, params, "retrying", detail, then, drop=drop)


def finish(
    tx: ops.Tx,
    lease: base.Lease,
    status: runs.RunStatus,
    output: str | None,
    error: runs.RunError | None,
    drop: list[runs.Key],
    progress: base.Progress | None,
) -> Any:
    params = {
        "status": status.value,
        "output": output,
        "error": None if error is None else json.dumps(error.to_json()),
        "escaped": json.dumps([[k.branch, k.seq, k.sub] for k in drop]) if drop else None,
    }
    detail = None if error is None else f"{error.type}: {error.message}"

    def then(state: ops.Row) -> bool | ops.Quiet:
        if status is runs.RunStatus.CANCELED:
            tx.send(tx.q.CANCEL_RUN_TOKENS, {"run_id": lease.run_id})
            ops.cancel_children(tx, lease.run_id)
        ops.write_progress(tx, lease.run_id, progress)
        ops.ended(tx, lease.run_id, parent=state)
        # Its worker looks for more work of its own accord; the others need waking only if
        # a queue's slot was freed, a parent may go on, or children were canceled.
        canceled = status is runs.RunStatus.CANCELED
        if state["limited"] or state["parent_id"] is not None or canceled:
            return True
        return ops.Quiet(True)

    queries = (tx.q.FINISH, tx.q.FINISH_WITH_EVENT)
    free_key = status in runs.KEY_FREEING
    return _transition(tx, lease, queries, params, status.value, detail, then, free_key=free_key)
