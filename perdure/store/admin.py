"""Reads for the server, the dashboard and /metrics, written once against `ops.Tx`:
queues with their depth, workers with the runs they hold, run counts, step durations, and
a cheap fingerprint of a run's trace (for the live event stream to poll).

The queries here are written in SQL both dialects read; only the parameter style differs
(`:name` for SQLite, `%(name)s` for PostgreSQL), converted once at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perdure.store import ops, pg_sql

# Upper bounds (seconds) of the step duration histogram's buckets.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Statuses of runs a queue holds back until they are due and a slot is free.
_WAITING_FOR_A_SLOT = "('queued', 'delayed', 'retrying', 'waiting')"

QUEUES = "SELECT name, concurrency_limit FROM queues"

QUEUE_STATS = f"""SELECT queue,
        SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running,
        SUM(CASE WHEN status IN {_WAITING_FOR_A_SLOT} AND due_at <= :now
            THEN 1 ELSE 0 END) AS depth,
        SUM(CASE WHEN status = 'waiting' AND due_at > :now THEN 1 ELSE 0 END) AS waiting,
        SUM(CASE WHEN status IN ('delayed', 'retrying') AND due_at > :now
            THEN 1 ELSE 0 END) AS delayed
    FROM runs
    WHERE status IN ('queued', 'delayed', 'retrying', 'waiting', 'running')
    GROUP BY queue"""

# Live workers, and the ones that ended since :since (stopped or declared dead).
WORKERS = """SELECT w.id, w.hostname, w.pid, w.version, w.concurrency, w.started_at,
        w.heartbeat_at, w.stopped_at, w.dead_at,
        (SELECT COUNT(*) FROM runs r WHERE r.lease_worker = w.id AND r.status = 'running')
            AS runs_held
    FROM workers w
    WHERE (w.stopped_at IS NULL AND w.dead_at IS NULL)
       OR COALESCE(w.stopped_at, w.dead_at) >= :since
    ORDER BY w.started_at DESC, w.id DESC
    LIMIT :limit"""

RUN_COUNTS = "SELECT status, COUNT(*) AS n FROM runs GROUP BY status"

_DURATION = "(finished_at - started_at)"
STEP_DURATIONS = (
    f"SELECT COUNT(*) AS n, COALESCE(SUM({_DURATION}), 0) AS total"
    + "".join(
        f", COALESCE(SUM(CASE WHEN {_DURATION} <= {bound!r} THEN 1 ELSE 0 END), 0) AS le_{i}"
        for i, bound in enumerate(STEP_BUCKETS)
    )
    + """ FROM journal
    WHERE kind = 'step' AND started_at IS NOT NULL AND finished_at IS NOT NULL"""
)

# What changes when a run's trace changes: entries added, settled, retried or dropped;
# logs and status transitions added. Compared, never shown.
TRACE_FINGERPRINT = """SELECT
        (SELECT COUNT(*) FROM journal WHERE run_id = :run_id) AS entries,
        (SELECT COALESCE(MAX(ord), 0) FROM journal WHERE run_id = :run_id) AS last_entry,
        (SELECT COALESCE(SUM(attempts), 0) FROM journal WHERE run_id = :run_id) AS tries,
        (SELECT COUNT(finished_at) FROM journal WHERE run_id = :run_id) AS finished,
        (SELECT COUNT(*) FROM journal WHERE run_id = :run_id AND status = 'failed') AS failed,
        (SELECT COALESCE(MAX(id), 0) FROM logs WHERE run_id = :run_id) AS last_log,
        (SELECT COALESCE(MAX(id), 0) FROM run_events WHERE run_id = :run_id) AS last_event"""

# A write through the same transaction path a checkpoint takes, changing nothing visible.
PROBE_WRITE = "UPDATE perdure_meta SET value = value WHERE key = 'schema_version'"

_NAMES = [
    "QUEUES",
    "QUEUE_STATS",
    "WORKERS",
    "RUN_COUNTS",
    "STEP_DURATIONS",
    "TRACE_FINGERPRINT",
    "PROBE_WRITE",
]
_SQLITE = {name: globals()[name] for name in _NAMES}
_POSTGRES = {name: pg_sql.to_pyformat(text) for name, text in _SQLITE.items()}


def _q(tx: ops.Tx, name: str) -> str:
    return _POSTGRES[name] if tx.q is pg_sql.Q else _SQLITE[name]


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    """A queue now: runs due and held back (`depth`), running, suspended, not yet due."""

    name: str
    limit: int | None
    depth: int
    running: int
    waiting: int
    delayed: int


@dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    id: str
    hostname: str
    pid: int
    version: str | None
    concurrency: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    dead_at: float | None
    runs_held: int


@dataclass(frozen=True, kw_only=True)
class StepDurations:
    """Cumulative counts of recorded steps per bucket (`STEP_BUCKETS`), their sum, count."""

    buckets: list[tuple[float, int]]
    count: int
    total: float


def queue_stats(tx: ops.Tx) -> list[QueueStats]:
    """Every declared queue, and every queue holding unfinished runs, by name."""
    limits = {r["name"]: r["concurrency_limit"] for r in tx.rows(_q(tx, "QUEUES"), {})}
    counts = {r["queue"]: r for r in tx.rows(_q(tx, "QUEUE_STATS"), {})}
    return [
        QueueStats(
            name=name,
            limit=limits.get(name),
            depth=_int(counts.get(name), "depth"),
            running=_int(counts.get(name), "running"),
            waiting=_int(counts.get(name), "waiting"),
            delayed=_int(counts.get(name), "delayed"),
        )
        for name in sorted(set(limits) | set(counts))
    ]


def _int(row: ops.Row | None, column: str) -> int:
    return 0 if row is None else int(row[column] or 0)


def list_workers(tx: ops.Tx, ended_within: float, limit: int) -> list[WorkerStatus]:
    params = {"since": tx.now - ended_within, "limit": limit}
    return [
        WorkerStatus(**{**dict(r), "runs_held": int(r["runs_held"])})
        for r in tx.rows(_q(tx, "WORKERS"), params)
    ]


def run_counts(tx: ops.Tx) -> dict[str, int]:
    return {r["status"]: int(r["n"]) for r in tx.rows(_q(tx, "RUN_COUNTS"), {})}


def step_durations(tx: ops.Tx) -> StepDurations:
    row = tx.rows(_q(tx, "STEP_DURATIONS"), {})[0]
    buckets = [(bound, int(row[f"le_{i}"])) for i, bound in enumerate(STEP_BUCKETS)]
    return StepDurations(buckets=buckets, count=int(row["n"]), total=float(row["total"]))


def trace_fingerprint(tx: ops.Tx, run_id: str) -> tuple[Any, ...]:
    row = tx.rows(_q(tx, "TRACE_FINGERPRINT"), {"run_id": run_id})[0]
    return tuple(int(value or 0) for value in dict(row).values())


def probe_write(tx: ops.Tx) -> None:
    tx.run(_q(tx, "PROBE_WRITE"), {})
