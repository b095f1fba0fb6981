"""Child-run transactions, written once against `ops.Tx`.

A parent's `trigger_and_wait` (one child) or `batch_trigger_and_wait` (many) is one
journal entry. Its children are created in the same transaction as that entry, with ids
derived from the parent and the key, so a replay never creates them twice. When the last
of them ends, the transaction that ends it settles the parent's entry with every child's
outcome and wakes the parent.
"""

from __future__ import annotations

import json
from typing import Any

from perdure import runs
from perdure.store import base, ops


def create_children(
    tx: ops.Tx, lease: base.Lease, entry: runs.Entry, children: list[base.NewRun]
) -> bool:
    if not ops.lease_held(tx, lease):
        return False
    for child in children:
        if not tx.rows(tx.q.RUN_EXISTS, {"id": child.id}):
            ops.create_run(tx, child)
    tx.run(tx.q.UPSERT_ENTRY, ops.entry_params(lease.run_id, entry))
    if entry.status is runs.EntryStatus.PENDING:
        _settle_if_all_ended(tx, lease.run_id, entry.key)
    return True


def child_ended(tx: ops.Tx, run_id: str, known: ops.Row | None = None) -> None:
    """Called by every transition that ends a run: settle its parent's wait if it was the
    last child of that entry to end. `known`: the run's parent entry columns, when the
    caller read them already (one statement fewer per finished run)."""
    if known is None:
        row = ops.one(tx, tx.q.PARENT_ENTRY_OF, {"id": run_id})
    else:
        row = known if known["parent_id"] is not None and known["parent_seq"] is not None else None
    if row is not None:
        key = runs.Key(branch=row["parent_branch"], seq=row["parent_seq"])
        _settle_if_all_ended(tx, row["parent_id"], key)


def outcome(row: ops.Row) -> dict[str, Any]:
    status = row["status"]
    error = None if row["error"] is None else json.loads(row["error"])
    if status == runs.RunStatus.CANCELED.value and error is None:
        error = {
            "type": "RunCanceled",
            "message": f"run {row['id']} was canceled",
            "traceback": None,
        }
    return {
        "id": row["id"],
        "status": status,
        "output": None if row["output"] is None else json.loads(row["output"]),
        "error": error,
    }


def _settle_if_all_ended(tx: ops.Tx, parent_id: str, key: runs.Key) -> None:
    state = ops.one(
        tx, tx.q.ENTRY_STATE, {"run_id": parent_id, "branch": key.branch, "seq": key.seq}
    )
    if state is None or state["status"] != runs.EntryStatus.PENDING.value:
        return  # a child started without waiting, or already settled
    siblings = tx.rows(
        tx.q.SIBLINGS, {"parent_id": parent_id, "branch": key.branch, "seq": key.seq}
    )
    if not siblings or any(not runs.RunStatus(s["status"]).is_terminal for s in siblings):
        return
    outcomes = [outcome(s) for s in siblings]
    result = outcomes if state["kind"] == runs.EntryKind.BATCH.value else outcomes[0]
    tx.run(
        tx.q.SETTLE_WAIT,
        {
            "run_id": parent_id,
            "branch": key.branch,
            "seq": key.seq,
            "status": runs.EntryStatus.COMPLETED.value,
            "result": json.dumps(result),
            "error": None,
        },
    )
    tx.run(tx.q.WAKE_RUN, {"run_id": parent_id})


def unfinished_children(tx: ops.Tx, parent_id: str) -> list[str]:
    return [r["id"] for r in tx.rows(tx.q.UNFINISHED_CHILDREN, {"parent_id": parent_id})]
