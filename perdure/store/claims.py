"""Claiming runs: a worker takes due runs and the runs of dead workers, within the
limits of their queues, and gets each with a fresh lease and its journal."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from perdure import runs
from perdure.store import base
from perdure.store.ops import (
    Later,
    Quiet,
    Row,
    Tx,
    completed,
    ended,
    event_params,
    journals,
    record_event,
    records,
    send_with_event,
)
from perdure.store.transitions import finish


def claim(
    tx: Tx,
    worker_id: str,
    task_ids: list[str],
    version: str | None,
    limit: int,
    max_recoveries: int,
    token: Any,
) -> Later | Quiet | tuple[list[base.Claim], bool]:
    """Take up to `limit` runs: orphans of dead workers first, then due runs by priority
    and due time, as many per limited (queue, concurrency key) as its free slots allow.
    `token` is a callable returning a fresh lease token. Also says whether runs were left
    because another claim held their slots (worth claiming again once it commits)."""
    # What a claim needs to know is asked for all at once (on PostgreSQL, one round trip),
    # then used in order: a worker declared dead takes nothing of what was found.
    params = {"task_ids": json.dumps(task_ids), "version": version, "worker_id": worker_id}
    claimer, expired, orphaned, queued, woken = _reads(tx, {**params, "limit": limit})
    state = claimer()[0]
    if not state["alive"]:
        return Quiet(([], False))  # declared dead or stopped: it may hold nothing more
    expire(tx, expired())
    orphans = list(orphaned())
    candidates = [*queued(), *woken()]
    due: list[Row] = []
    contended = False
    room = limit - len(orphans)
    if room > 0:
        found = candidates
        if state["limited"]:
            scan = {**params, "limit": room, "scan": room * 4}
            found = [*found, *tx.rows(tx.q.LIMITED_CLAIMABLE_RUNS, scan)]
        # A run found by both reads (its queue was limited in between) is taken once, as
        # the later read found it: within its queue's limit.
        found = list({row["id"]: row for row in found}.values())
        due, contended = _admit(tx, sorted(found, key=_rank)[:room])
    # Runs found beyond the room are left (on PostgreSQL locked until this commits, so
    # other claims meanwhile skipped them): the other workers are woken once it commits,
    # lest one with free slots wait for its poll. Otherwise a claim wakes nobody.
    left = len(candidates) > max(room, 0)
    now = state["now"]  # the transaction's clock, read with the rest (tx.now would cost a trip)
    taken = [
        _take(tx, row, worker_id, version, max_recoveries, token(), now) for row in orphans + due
    ]
    _take_leases(tx, [write for _, write in filter(None, taken)])
    claims = [claim for claim, _ in filter(None, taken)]
    if not claims:
        return ([], contended) if left else Quiet(([], contended))
    # Every journal in one statement, read once the leases are taken: on PostgreSQL it
    # travels with COMMIT, and the claims are made once it is answered.
    read = journals(tx, [c.lease.run_id for c in claims])

    def made() -> tuple[list[base.Claim], bool]:
        held = read()
        return [dataclasses.replace(c, journal=held[c.lease.run_id]) for c in claims], contended

    return Later(made) if left else Quiet(Later(made))


Reads = Callable[[], Sequence[Row]]


def _reads(tx: Tx, params: dict[str, Any]) -> tuple[Reads, Reads, Reads, Reads, Reads]:
    """The claim's first reads, sent at once: the claimer's state, the expired runs, the
    orphans, the queued runs and the other due runs. One statement where the dialect has
    it (CLAIM_READS), its rows tagged with the read they answer."""
    if tx.q.CLAIM_READS is None:
        return (
            tx.rows_later(tx.q.CLAIMER, params),
            tx.rows_later(tx.q.EXPIRED_RUNS, {}),
            tx.rows_later(tx.q.ORPHANED_RUNS, params),
            tx.rows_later(tx.q.QUEUED_RUNS, params),
            tx.rows_later(tx.q.DUE_RUNS, params),
        )
    found = tx.rows_later(tx.q.CLAIM_READS, params)

    def part(name: str) -> Reads:
        return lambda: [row for row in found() if row["part"] == name]

    return part("claimer"), part("expired"), part("orphaned"), part("queued"), part("due")


def _rank(row: Row) -> tuple[int, float, str]:
    """The order due runs are taken in: by priority, then the earliest due first."""
    return -row["priority"], row["due_at"], row["id"]


def _admit(tx: Tx, found: Sequence[Row]) -> tuple[list[Row], bool]:
    """The found runs that fit their slots, counted under the slots' lock (the count the
    query made may be stale by the time it returns: another worker may have claimed since)."""
    free: dict[tuple[str, str | None], int] = {}
    admitted, contended = [], False
    for row in found:
        if row["concurrency_limit"] is None:
            admitted.append(row)
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
            admitted.append(row)
    return admitted, contended


def expire(tx: Tx, expired: Sequence[Row]) -> None:
    """End queued and delayed runs whose ttl passed before any worker took them."""
    error = runs.RunError(type="expired", message="the run's ttl passed before it started")
    for row in expired:
        tx.run(tx.q.EXPIRE, {"id": row["id"], "error": json.dumps(error.to_json())})
        tx.run(tx.q.FREE_KEY, {"run_id": row["id"]})
        record_event(tx, event_params(row["id"], None, "expired", 0, None, "ttl passed"))
        ended(tx, row["id"])


def _take(
    tx: Tx,
    row: Row,
    worker_id: str,
    version: str | None,
    max_recoveries: int,
    token: str,
    now: float,
) -> tuple[base.Claim, Write] | None:
    """Take the run of `row`, as the query that found it read it: on PostgreSQL that query
    locked it too (FOR UPDATE), which returns its latest committed state, however old the
    query's snapshot (another worker may have taken it over meanwhile). The lease's write
    is returned, for `_take_leases`."""
    run_id = row["id"]
    status = runs.RunStatus(row["status"])
    takeover = status is runs.RunStatus.RUNNING
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
    detail = "takeover" if takeover else None
    write = (
        {
            "id": run_id,
            "token": token,
            "worker_id": worker_id,
            "attempt": attempt,
            "recoveries": recoveries,
            "version": version,
            "executed_seconds": row["executed_seconds"] if attempt == row["attempts"] else 0,
        },
        event_params(run_id, status.value, "running", attempt, worker_id, detail),
    )
    claim = base.Claim(
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
        journal=[],  # filled by `claim`, with the other runs' journals
        db_now=now,
    )
    return claim, write


Write = tuple[dict[str, Any], dict[str, Any]]  # a lease's write: its parameters, its event's


def _take_leases(tx: Tx, writes: list[Write]) -> None:
    """The leases' writes, with their events: one statement for all where the dialect has
    one (on PostgreSQL a statement costs the worker's one thread tens of microseconds)."""
    if tx.q.TAKE_LEASES_WITH_EVENTS is not None and len(writes) > 1:
        each = [{**params, **event} for params, event in writes]
        tx.send(tx.q.TAKE_LEASES_WITH_EVENTS, {"writes": records(each)})
        return
    for params, event in writes:
        send_with_event(tx, (tx.q.TAKE_LEASE, tx.q.TAKE_LEASE_WITH_EVENT), params, event)


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
    completed(finish(tx, base.Lease(run_id=row["id"], token=token), status, None, error, [], None))
