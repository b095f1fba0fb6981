"""The store's transactions, written once against `Tx`: a connection inside a transaction.

Each function here runs inside one transaction the backend opened (and may batch with
others: group commit). Backends provide `Tx` and the clock; the logic stays here.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from perdure import exceptions, runs
from perdure.store import base

Row = Mapping[str, Any]


class Tx(Protocol):
    """A connection inside a transaction, with `now` (the database's clock, read once per
    transaction) and `q`, the named queries of its backend's dialect. A query's `:now`
    is that clock: callers never pass it."""

    q: Any

    @property
    def now(self) -> float: ...

    def rows(self, query: str, params: Mapping[str, Any]) -> Sequence[Row]: ...
    def values(self, query: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        """Rows as plain tuples, in the query's column order: for reads of many rows (on
        PostgreSQL read in binary: a column of a type psycopg has no binary loader for,
        an enum say, would come as bytes; journal columns are text and numbers)."""
        ...

    def rows_later(self, query: str, params: Mapping[str, Any]) -> Callable[[], Sequence[Row]]:
        """`rows`, sent at once and answered when first asked for: statements sent this
        way one after another travel together (on PostgreSQL, one round trip for all)."""
        ...

    def values_later(
        self, query: str, params: Mapping[str, Any]
    ) -> Callable[[], Sequence[tuple[Any, ...]]]:
        """`values`, likewise; asked for after COMMIT, they travel with it."""
        ...

    def run(self, query: str, params: Mapping[str, Any]) -> int: ...
    def count_later(self, query: str, params: Mapping[str, Any]) -> Callable[[], int]:
        """A write whose row count is read only once the transaction committed (on
        PostgreSQL the statement travels with COMMIT): a function returning it."""
        ...

    def send(self, query: str, params: Mapping[str, Any]) -> None:
        """A write whose answer nobody waits for: PostgreSQL sends it along with the next
        statement that is awaited (or COMMIT). Should it fail, that one fails."""
        ...

    def fenced_entry(self, params: Mapping[str, Any]) -> Callable[[], bool]:
        """UPSERT_ENTRY_FENCED (`entry_params` and the lease's `token`): a function saying,
        once the transaction committed, whether the entry was written (the run's lease was
        held). PostgreSQL sends those of a batch that come one after another as one
        statement, before the next other statement."""
        ...

    def flush(self) -> None:
        """Send what was held back to go with later statements (the store calls it before
        COMMIT)."""
        ...


class Later:
    """An operation's outcome known only once its transaction committed (it counts rows
    written by statements sent with COMMIT): the store resolves it before it answers."""

    __slots__ = ("resolve",)

    def __init__(self, resolve: Callable[[], Any]) -> None:
        self.resolve = resolve

    def __bool__(self) -> bool:
        raise TypeError("an outcome known only after the commit: the store resolves it")


class Then:
    """An outcome that needs the rest of its operation run first. The rest runs before
    COMMIT, once the operations after it in the batch were sent (at once in a batch run
    again isolated), so that a batch's reads travel together (on PostgreSQL, one round trip
    for all of a batch's transitions rather than one each). Its writes land after those of
    the operations that follow it: a rest writes only what may."""

    __slots__ = ("rest",)

    def __init__(self, rest: Callable[[], Any]) -> None:
        self.rest = rest

    def __bool__(self) -> bool:
        raise TypeError("an outcome known only once its batch was sent: the store runs it")


def completed(outcome: Any) -> Any:
    """An operation's outcome once the rest of it ran (`Then`)."""
    while isinstance(outcome, Then):
        outcome = outcome.rest()
    return outcome


class Quiet:
    """An outcome of a write after which no worker needs waking: it made nothing claimable
    that was not before (a run ended that held no queue's slot and had no parent)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


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


def get_run(tx: Tx, run_id: str) -> runs.Run | None:
    row = one(tx, tx.q.GET_RUN, {"id": run_id})
    return None if row is None else run_from_row(row)


def require_run(tx: Tx, run_id: str) -> runs.Run:
    run = get_run(tx, run_id)
    if run is None:
        raise exceptions.RunNotFound(f"no run has the id {run_id!r}")
    return run


def journal(tx: Tx, run_id: str) -> list[runs.Entry]:
    """A run's whole journal, in commit order."""
    return _entries(tx.values(tx.q.LIST_JOURNAL, {"run_id": run_id}))


def entry(tx: Tx, run_id: str, key: runs.Key) -> runs.Entry | None:
    params = {"run_id": run_id, "branch": key.branch, "seq": key.seq}
    found = _entries(tx.values(tx.q.GET_ENTRY, params))
    return found[0] if found else None


def journals(tx: Tx, run_ids: list[str]) -> Callable[[], dict[str, runs.Recorded]]:
    """The journals of the runs a claim takes, in one statement and in no set order (no
    sort of the entries), asked for now and read when called (`values_later`). Read at
    every claim, where a long journal makes it the claim's main cost: hence plain tuples,
    kept as rows (`runs.Recorded`) that the replay reads without making entries of them."""
    fetch = tx.values_later(tx.q.JOURNALS_OF, {"run_ids": json.dumps(run_ids)})

    def read() -> dict[str, runs.Recorded]:
        found: dict[str, list[tuple[Any, ...]]] = {run_id: [] for run_id in run_ids}
        with _no_gc():  # 10,000 rows are 10,000 tuples, none in a cycle
            for row in fetch():
                found[row[-1]].append(row)  # ENTRY_COLUMNS, then the run's id: no copy
        return {run_id: runs.Recorded(rows) for run_id, rows in found.items()}

    return read


def _entries(rows: Iterable[Sequence[Any]]) -> list[runs.Entry]:
    """Entries from rows in ENTRY_COLUMNS' order."""
    with _no_gc():
        return [runs.entry_of(row) for row in rows]


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while many objects without cycles are made: each
    700 allocations would start a collection pass over the young objects, and a claim of a
    10,000-entry journal spent a third of its time there. Threads may overlap here (the
    store's and the read pool's): the last to leave turns the collector back on, and only
    if it was on when the first came in."""
    global _gc_pausers, _gc_was_on
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_on = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_on:
                gc.enable()


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_on = True


# --- events ----------------------------------------------------------------------------


def record_event(tx: Tx, event: Mapping[str, Any]) -> None:
    """Record a run's transition (`event_params`)."""
    tx.send(tx.q.INSERT_EVENT, event)


def event_params(
    run_id: str,
    from_status: str | None,
    to_status: str,
    attempt: int,
    worker_id: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "from_status": from_status,
        "to_status": to_status,
        "attempt": attempt,
        "worker_id": worker_id,
        "detail": detail,
    }


def send_with_event(
    tx: Tx, queries: tuple[str, str | None], params: Mapping[str, Any], event: Mapping[str, Any]
) -> None:
    """A write of one run's row and its event (`event_params`): one statement where the
    dialect has one for both (`X_WITH_EVENT`), two otherwise. Their parameters share one
    namespace: a name both use has one value."""
    write, with_event = queries
    if with_event is None:
        tx.send(write, params)
        record_event(tx, event)
    else:
        tx.send(with_event, {**params, **event})


# --- creating runs -----------------------------------------------------------------------


def create_run(tx: Tx, new: base.NewRun) -> tuple[str, bool]:
    if new.idempotency_key is not None:
        tx.rows(tx.q.LOCK_IDEMPOTENCY_KEY, {"task_id": new.task_id, "key": new.idempotency_key})
        held = one(tx, tx.q.FIND_KEY, {"task_id": new.task_id, "key": new.idempotency_key})
        if held is not None and held["expires_at"] > tx.now:
            return held["run_id"], True
        tx.send(
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
    send_with_event(
        tx,
        (tx.q.INSERT_RUN, tx.q.INSERT_RUN_WITH_EVENT),
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
            "delay": float(new.delay or 0),
            "ttl": None if new.ttl is None else float(new.ttl),
            "parent_branch": None if new.parent_entry is None else new.parent_entry.branch,
            "parent_seq": None if new.parent_entry is None else new.parent_entry.seq,
            "batch_index": new.batch_index,
        },
        event_params(new.id, None, status.value, 0),
    )
    return new.id, False


# --- writes of a leased run ------------------------------------------------------------------


def lease_held(tx: Tx, lease: base.Lease) -> bool:
    return bool(tx.rows(tx.q.CHECK_LEASE, {"run_id": lease.run_id, "token": lease.token}))


def records(rows: Sequence[Mapping[str, Any]]) -> str:
    """Parameters of many rows as one JSON array (read back by jsonb_to_recordset). A
    float JSON has no number for (a wait without deadline wakes at infinity) goes as the
    string float8 reads back as that same float."""
    try:
        return json.dumps(rows, allow_nan=False)
    except ValueError:
        return json.dumps([{k: _float_text(v) for k, v in row.items()} for row in rows])


def _float_text(value: Any) -> Any:
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


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


def write_progress(tx: Tx, run_id: str, progress: base.Progress | None) -> None:
    if progress is None:
        return
    for line in progress.logs:
        tx.send(
            tx.q.INSERT_LOG,
            {
                "run_id": run_id,
                "attempt": line.attempt,
                "branch": line.branch,
                "seq": line.seq,
                "level": line.level,
                "message": line.message.replace("\x00", "\ufffd"),  # text holds no NUL
                "at": line.at,
            },
        )
    if progress.metadata is not None:
        # Each key given replaces that key's value (None included); others are kept.
        row = one(tx, tx.q.GET_METADATA, {"run_id": run_id})
        merged = {**json.loads(row["metadata"] if row else "{}"), **progress.metadata}
        tx.send(tx.q.SET_METADATA, {"run_id": run_id, "metadata": json.dumps(merged)})


def checkpoint(
    tx: Tx, lease: base.Lease, entries: list[runs.Entry], progress: base.Progress | None
) -> bool | Later:
    """Entries' `result` must already be JSON text (or None). With entries alone (the
    common case), each is written fenced by the lease and the outcome is read after the
    commit: on PostgreSQL BEGIN, the entries and COMMIT make one round trip."""
    if entries and (progress is None or (not progress.logs and progress.metadata is None)):
        token = lease.token
        written = [
            tx.fenced_entry({**entry_params(lease.run_id, e), "token": token}) for e in entries
        ]
        # The first fenced write locks the run's row (FOR SHARE) when the lease is held,
        # so the lease cannot change before COMMIT: every entry is written, or none.
        return Later(written[0])
    if not entries:
        if not lease_held(tx, lease):
            return False
    else:
        first, *rest = entries
        fenced = {**entry_params(lease.run_id, first), "token": lease.token}
        if not tx.run(tx.q.UPSERT_ENTRY_FENCED, fenced):
            return False  # the lease is gone: nothing was written
        for entry in rest:
            tx.send(tx.q.UPSERT_ENTRY, entry_params(lease.run_id, entry))
    write_progress(tx, lease.run_id, progress)
    return True


def settled_waits(tx: Tx, waits: list[tuple[str, runs.Key]]) -> list[tuple[str, runs.Key]]:
    """Which of these waits (run id, journal key) are no longer pending."""
    given = json.dumps([[run_id, k.branch, k.seq] for run_id, k in waits])
    return [
        (r["run_id"], runs.Key(branch=r["branch"], seq=r["seq"]))
        for r in tx.rows(tx.q.SETTLED_WAITS, {"waits": given})
    ]


def drop_entries(tx: Tx, run_id: str, keys: list[runs.Key]) -> None:
    for key in keys:
        tx.send(
            tx.q.DELETE_ENTRY,
            {"run_id": run_id, "branch": key.branch, "seq": key.seq, "sub": key.sub},
        )


def ended(tx: Tx, run_id: str, parent: Row | None = None) -> None:
    """`parent`: the run's row with its parent entry, when the caller read it already."""
    from perdure.store import children  # children builds on this module

    children.child_ended(tx, run_id, parent)


def cancel_children(tx: Tx, run_id: str) -> None:
    """A canceled parent cancels its unfinished children (and so theirs)."""
    from perdure.store import children

    for child in children.unfinished_children(tx, run_id):
        cancel_run(tx, child)


# --- client transitions ---------------------------------------------------------------------


def cancel_run(tx: Tx, run_id: str) -> runs.Run:
    run = require_run(tx, run_id)
    if run.status.is_terminal:
        raise exceptions.InvalidTransition(
            f"run {run_id} is already {run.status.value}; only unfinished runs can be canceled"
        )
    if run.status is runs.RunStatus.RUNNING:
        tx.run(tx.q.REQUEST_CANCEL, {"id": run_id})
    elif run.status is runs.RunStatus.WAITING:
        # It started: wake it so its code gets CancelledError and may clean up.
        tx.run(tx.q.REQUEST_CANCEL_AND_WAKE, {"id": run_id})
    else:
        tx.run(tx.q.CANCEL_IDLE, {"id": run_id})
        tx.run(tx.q.FREE_KEY, {"run_id": run_id})
        tx.run(tx.q.CANCEL_RUN_TOKENS, {"run_id": run_id})
        record_event(
            tx, event_params(run_id, run.status.value, "canceled", run.attempts, None, "canceled")
        )
        ended(tx, run_id)
    cancel_children(tx, run_id)
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
        drop_entries(tx, run_id, keys)
    tx.run(tx.q.REQUEUE, {"id": run_id})
    if run.idempotency_key is not None:
        held = one(tx, tx.q.FIND_KEY, {"task_id": run.task_id, "key": run.idempotency_key})
        if held is None or held["expires_at"] <= tx.now:
            tx.send(
                tx.q.HOLD_KEY,
                {
                    "task_id": run.task_id,
                    "key": run.idempotency_key,
                    "run_id": run_id,
                    "expires_at": tx.now + key_ttl,
                },
            )
    record_event(
        tx, event_params(run_id, run.status.value, "queued", run.attempts, None, "retried")
    )
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
