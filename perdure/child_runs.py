"""Child runs started by a task: `trigger`, `trigger_and_wait`, `batch_trigger_and_wait`.

Each call is one journal entry. The children are created in the same transaction as the
entry, with ids derived from the parent and the key, so however often the parent replays,
each child is created once. A waiting parent suspends (holding no slot: a queue with
concurrency 1 cannot deadlock on its own children) until the last child ends, whose final
transaction settles the entry with every child's outcome.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perdure import runs, signals
from perdure.store import base

if TYPE_CHECKING:
    from perdure.branches import Branch
    from perdure.execution import Execution
    from perdure.tasks import Task


@dataclass(frozen=True, kw_only=True)
class Options:
    tags: list[str] | None = None
    queue: str | None = None
    concurrency_key: str | None = None
    priority: int = 0
    delay: float | None = None
    ttl: float | None = None


def child_id(parent: str, key: runs.Key, index: int) -> str:
    """The id of the index-th child started at this journal key: the same on every replay."""
    value = int.from_bytes(
        hashlib.sha256(f"{parent}:{key.branch}:{key.seq}:{index}".encode()).digest()[:17]
    )
    return "run_" + runs.base32_digits(value)[::-1]  # least significant first, as always


async def start(
    ex: Execution,
    branch: Branch,
    task: Task[Any, Any],
    payloads: list[Any],
    options: Options,
    mode: str,
) -> Any:
    """mode: "trigger" (no wait: a handle), "wait" (one child's output), "batch"."""
    await ex.enter(branch)
    key = branch.next_key()
    kind = runs.EntryKind.BATCH if mode == "batch" else runs.EntryKind.CHILD
    entry = ex.match(key, kind, task.id)
    if entry is None:
        ex.frontier(branch)
        entry = await _create(ex, key, kind, task, payloads, options, waits=mode != "trigger")
    if mode == "trigger":
        from perdure.app import RunHandle

        return RunHandle(ex.worker.app, task, json.loads(entry.result or "{}")["id"], False)
    while entry.status is runs.EntryStatus.PENDING:
        await ex.wait_until(branch, None, settles=key)
        found = await ex.store.entry(ex.run_id, key)
        if found is not None:
            entry = found
            ex.journal.put(entry)
    return _outcomes(task, json.loads(entry.result or "null"), mode)


async def _create(
    ex: Execution,
    key: runs.Key,
    kind: runs.EntryKind,
    task: Task[Any, Any],
    payloads: list[Any],
    options: Options,
    waits: bool,
) -> runs.Entry:
    texts = [ex.worker.app.encode_payload(task, p) for p in payloads]  # PayloadError here
    children = [
        base.NewRun(
            id=child_id(ex.run_id, key, i),
            task_id=task.id,
            queue=options.queue or task.queue,
            payload=text,
            root_id=ex.claim.root_id,
            parent_id=ex.run_id,
            version=ex.claim.version,
            tags=list(options.tags or []),
            concurrency_key=options.concurrency_key,
            priority=options.priority,
            delay=options.delay,
            ttl=options.ttl,
            parent_entry=key if waits else None,
            batch_index=i if waits else None,
        )
        for i, text in enumerate(texts)
    ]
    now = ex.db_now()
    if not waits:
        status, result = runs.EntryStatus.COMPLETED, json.dumps({"id": children[0].id})
    elif not children:  # an empty batch: nothing to wait for
        status, result = runs.EntryStatus.COMPLETED, "[]"
    else:
        status, result = runs.EntryStatus.PENDING, None
    entry = runs.Entry(
        key=key,
        kind=kind,
        name=task.id,
        status=status,
        result=result,
        started_at=now,
        finished_at=None if status is runs.EntryStatus.PENDING else now,
        attempt=ex.attempt,
    )
    await ex.flush_values()
    if not await ex.store.create_children(ex.lease, entry, children):
        ex.freeze(signals.LeaseLost())
        ex.check_frozen()
    ex.journal.put(entry)
    return entry


def _outcomes(task: Task[Any, Any], settled: Any, mode: str) -> Any:
    if mode == "batch":
        return [_result(task, outcome) for outcome in settled]
    return _result(task, settled).unwrap()


def _result(task: Task[Any, Any], outcome: dict[str, Any]) -> runs.Result[Any]:
    if outcome["status"] == runs.RunStatus.COMPLETED.value:
        output = task.output_codec.validate(outcome["output"])
        return runs.Result(run_id=outcome["id"], ok=True, output=output)
    error = runs.RunError.from_json(outcome["error"]) or runs.RunError(
        type=outcome["status"], message=f"the run ended {outcome['status']}"
    )
    return runs.Result(run_id=outcome["id"], ok=False, error=error)
