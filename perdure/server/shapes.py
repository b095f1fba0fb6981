"""What the HTTP API returns: runs, traces, tokens, queues, workers and tasks as JSON.

Times are ISO 8601 strings in UTC with milliseconds (`2025-01-31T09:30:00.125Z`, what
JavaScript's `Date` reads and writes); durations are milliseconds (`duration_ms`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from perdure import child_runs, runs, tokens
from perdure.store import admin, base
from perdure.trace import Trace

JSON = dict[str, Any]
_ENDED = frozenset({"retrying", *(s.value for s in runs.TERMINAL)})
_WAIT_KINDS = frozenset({runs.EntryKind.SLEEP, runs.EntryKind.WAIT, runs.EntryKind.BATCH})


def when(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run(r: runs.Run) -> JSON:
    """A Run as DESIGN §2 shapes it (and its queue, concurrency key, priority, recoveries)."""
    return {
        "id": r.id,
        "task_id": r.task_id,
        "status": r.status.value,
        "payload": r.payload,
        "output": r.output,
        "error": None if r.error is None else r.error.to_json(),
        "attempts": r.attempts,
        "tags": r.tags,
        "metadata": r.metadata,
        "parent_id": r.parent_id,
        "root_id": r.root_id,
        "idempotency_key": r.idempotency_key,
        "version": r.version,
        "queue": r.queue,
        "concurrency_key": r.concurrency_key,
        "priority": r.priority,
        "recoveries": r.recoveries,
        "created_at": when(r.created_at),
        "started_at": when(r.started_at),
        "finished_at": when(r.finished_at),
    }


def trace(t: Trace, children: list[runs.Run], run_tokens: list[tokens.TokenRecord]) -> JSON:
    """A run's trace: its attempts, journal entries, what it waits on, its children,
    tokens, status transitions and logs."""
    child_ids = {c.id for c in children}
    shaped = [entry(t.run.id, e, child_ids) for e in t.entries]
    return {
        "run": run(t.run),
        "attempts": attempts(t.run, t.events),
        "entries": shaped,
        "waits": [e for e, raw in zip(shaped, t.entries, strict=True) if _is_wait(raw)],
        "children": [run(c) for c in children],
        "tokens": [token(x) for x in run_tokens],
        "events": [event(e) for e in t.events],
        "logs": [log(line) for line in t.logs],
    }


def entry(run_id: str, e: runs.Entry, child_ids: set[str]) -> JSON:
    key: list[Any] = [e.key.branch, e.key.seq] + ([e.key.sub] if e.key.sub else [])
    result = None if e.result is None else json.loads(e.result)
    shaped = {
        "key": key,
        "kind": e.kind.value,
        "name": e.name,
        "status": e.status.value,
        "result": result,
        "error": _entry_error(e.error),
        "attempts": e.attempts,
        "attempt": e.attempt,
        "started_at": when(e.started_at),
        "finished_at": when(e.finished_at),
        "wake_at": when(e.wake_at),
        "duration_ms": _duration(e.started_at, e.finished_at),
        "token_id": None,
        "child_run_ids": [],
    }
    if e.kind is runs.EntryKind.WAIT:
        shaped["token_id"] = e.name
    elif e.kind is runs.EntryKind.TOKEN and isinstance(result, dict):
        shaped["token_id"] = result.get("id")
    elif e.kind in (runs.EntryKind.CHILD, runs.EntryKind.BATCH):
        shaped["child_run_ids"] = _children_of(run_id, e.key, child_ids)
    return shaped


def _children_of(run_id: str, key: runs.Key, child_ids: set[str]) -> list[str]:
    found: list[str] = []
    while (candidate := child_runs.child_id(run_id, key, len(found))) in child_ids:
        found.append(candidate)
    return found


def _is_wait(e: runs.Entry) -> bool:
    if e.kind in _WAIT_KINDS:
        return True
    if e.kind is not runs.EntryKind.CHILD:
        return False
    # A child started with `trigger` is recorded {"id": ...} at once: nothing waits on it.
    result = None if e.result is None else json.loads(e.result)
    return not (isinstance(result, dict) and set(result) == {"id"})


def _entry_error(error: dict[str, Any] | None) -> JSON | None:
    if error is None:
        return None
    return {k: error.get(k) for k in ("type", "message", "traceback")}


def _duration(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000, 3)


def attempts(r: runs.Run, events: list[base.RunEvent]) -> list[JSON]:
    """One item per attempt, from the run's status transitions: when it started and
    ended, how, on which workers, and how many takeovers it took."""
    found: dict[int, JSON] = {}
    for ev in events:
        if ev.attempt < 1 or ev.detail == "retried":
            continue
        a = found.setdefault(ev.attempt, _attempt(ev.attempt))
        if ev.to_status == "running" and a["started_at"] is None:
            a["started_at"] = when(ev.at)
        if ev.worker_id and ev.worker_id not in a["worker_ids"]:
            a["worker_ids"].append(ev.worker_id)
        a["takeovers"] += ev.detail == "takeover"
        if ev.to_status in _ENDED:
            a["finished_at"], a["status"] = when(ev.at), ev.to_status
            a["error"] = _detail_error(ev.detail) if ev.to_status != "completed" else None
        elif ev.to_status in ("running", "waiting"):
            a["status"] = ev.to_status
    last = found.get(r.attempts)
    if last is not None:
        last["status"] = r.status.value
        if r.status.is_terminal:
            last["error"] = None if r.error is None else r.error.to_json()
    return [found[n] for n in sorted(found)]


def _attempt(number: int) -> JSON:
    return {
        "attempt": number,
        "status": None,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "worker_ids": [],
        "takeovers": 0,
    }


def _detail_error(detail: str | None) -> JSON | None:
    if not detail:
        return None
    kind, sep, message = detail.partition(": ")
    return {"type": kind, "message": message, "traceback": None} if sep else None


def event(e: base.RunEvent) -> JSON:
    return {
        "at": when(e.at),
        "from_status": e.from_status,
        "to_status": e.to_status,
        "attempt": e.attempt,
        "worker_id": e.worker_id,
        "detail": e.detail,
    }


def log(line: base.LogLine) -> JSON:
    return {
        "at": when(line.at),
        "level": line.level,
        "message": line.message,
        "attempt": line.attempt,
        "branch": line.branch,
        "seq": line.seq,
    }


def token(t: tokens.TokenRecord) -> JSON:
    return {
        "id": t.id,
        "url": t.url,
        "status": t.status.value,
        "data": t.data,
        "run_id": t.run_id,
        "tags": t.tags,
        "idempotency_key": t.idempotency_key,
        "timeout_at": when(t.timeout_at),
        "created_at": when(t.created_at),
        "completed_at": when(t.completed_at),
    }


def queue(q: admin.QueueStats) -> JSON:
    return {
        "name": q.name,
        "limit": q.limit,
        "depth": q.depth,
        "running": q.running,
        "waiting": q.waiting,
        "delayed": q.delayed,
    }


def worker(w: admin.WorkerStatus, now: float) -> JSON:
    status = "dead" if w.dead_at is not None else "stopped" if w.stopped_at else "live"
    return {
        "id": w.id,
        "status": status,
        "hostname": w.hostname,
        "pid": w.pid,
        "version": w.version,
        "concurrency": w.concurrency,
        "runs_held": w.runs_held,
        "started_at": when(w.started_at),
        "heartbeat_at": when(w.heartbeat_at),
        "seconds_since_heartbeat": round(max(now - w.heartbeat_at, 0.0), 3),
        "stopped_at": when(w.stopped_at),
        "dead_at": when(w.dead_at),
    }
