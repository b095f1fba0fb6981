"""The Store's operations for backends whose driver blocks: each operation is a function
of a transaction (`ops`, `claims`, `waits`, `children`), made on the store's connection
thread (`connection.ConnectionThread`, with group commit). A backend supplies the
connection, liveness and wake-ups.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from perdure import runs
from perdure.store import admin, base, claims, connection, ops, transitions, waits
from perdure.store import children as child_ops

Op = connection.Op


class BatchedStore(connection.ConnectionThread):
    """The Store's operations over one connection owned by one thread."""

    def __init__(self) -> None:
        super().__init__()
        self._locks: dict[str, Any] = {}  # this process's workers -> their liveness locks

    def notify(self, cancel: bool = False) -> None:
        """Wake the workers: claimable work may have appeared (and, with `cancel`, a run's
        cancellation was asked for: the worker holding it looks for it)."""

    def _contended(self) -> None:
        """A claim left runs whose slots another claim held: look again once it commits."""

    def _lock_held(self, tx: ops.Tx, worker_id: str) -> bool:
        """Whether that worker's liveness lock is still held (it dies with its holder)."""
        raise NotImplementedError

    async def reap_workers(self, lease_seconds: float) -> list[str]:
        dead: list[str] = await self._write_op(lambda tx: self._reap(tx, lease_seconds))
        if dead:
            self.notify()
        return dead

    def _reap(self, tx: ops.Tx, lease_seconds: float) -> list[str]:
        dead = []
        for row in tx.rows(tx.q.LIVE_WORKERS, {}):
            if row["id"] in self._locks:
                continue
            silent = tx.now - row["heartbeat_at"] > lease_seconds
            if silent or not self._lock_held(tx, row["id"]):
                tx.run(tx.q.MARK_DEAD, {"id": row["id"]})
                dead.append(row["id"])
        return dead

    async def _write_and_notify(self, op: Op, cancel: bool = False) -> Any:
        """A write after which claimable work may have appeared: wake the workers once it
        commits (in the write's own transaction where the backend can), unless its outcome
        says it made nothing claimable (`ops.Quiet`)."""
        return await self._write_op(op, notify=connection.CANCEL if cancel else connection.WORK)

    # --- client ----------------------------------------------------------------------

    async def create_run(self, new: base.NewRun) -> tuple[str, bool]:
        result: tuple[str, bool] = await self._write_and_notify(lambda tx: ops.create_run(tx, new))
        return result

    async def get_run(self, run_id: str) -> runs.Run | None:
        found: runs.Run | None = await self._read_op(lambda tx: ops.get_run(tx, run_id))
        return found

    async def list_runs(self, filter: base.RunFilter) -> list[runs.Run]:
        result: list[runs.Run] = await self._read_op(lambda tx: _list_runs(tx, filter))
        return result

    async def journal(self, run_id: str) -> list[runs.Entry]:
        result: list[runs.Entry] = await self._read_op(lambda tx: ops.journal(tx, run_id))
        return result

    async def entry(self, run_id: str, key: runs.Key) -> runs.Entry | None:
        found: runs.Entry | None = await self._read_op(lambda tx: ops.entry(tx, run_id, key))
        return found

    async def logs(self, run_id: str) -> list[base.LogLine]:
        rows = await self._read_op(lambda tx: tx.rows(tx.q.LIST_LOGS, {"run_id": run_id}))
        return [base.LogLine(**dict(r)) for r in rows]

    async def events(self, run_id: str) -> list[base.RunEvent]:
        rows = await self._read_op(lambda tx: tx.rows(tx.q.LIST_EVENTS, {"run_id": run_id}))
        return [base.RunEvent(**dict(r)) for r in rows]

    async def cancel_run(self, run_id: str) -> runs.Run:
        run: runs.Run = await self._write_and_notify(
            lambda tx: ops.cancel_run(tx, run_id), cancel=True
        )
        return run

    async def retry_run(self, run_id: str, key_ttl: float = 30 * 86400) -> runs.Run:
        run: runs.Run = await self._write_and_notify(lambda tx: ops.retry_run(tx, run_id, key_ttl))
        return run

    async def replay_run(
        self, run_id: str, new_id: str, payload: str | None, before: runs.Key | None
    ) -> str:
        result: str = await self._write_and_notify(
            lambda tx: ops.replay_run(tx, run_id, new_id, payload, before)
        )
        return result

    # --- claiming and leased runs ---------------------------------------------------

    async def set_queue_limits(self, limits: dict[str, int | None]) -> None:
        def op(tx: ops.Tx) -> None:
            for name, limit in limits.items():
                tx.run(tx.q.UPSERT_QUEUE, {"name": name, "limit": limit})

        await self._write_op(op)

    async def claim(
        self,
        worker_id: str,
        task_ids: list[str],
        version: str | None,
        limit: int,
        max_recoveries: int,
    ) -> list[base.Claim]:
        token = lambda: secrets.token_hex(12)  # noqa: E731
        taken: list[base.Claim]
        op: Op = lambda tx: claims.claim(  # noqa: E731
            tx, worker_id, task_ids, version, limit, max_recoveries, token
        )
        taken, contended = await self._write_op(op, notify=connection.WORK, durable=False)
        if contended:
            self._contended()
        return taken

    async def next_due(self, task_ids: list[str]) -> float | None:
        """When the earliest not-yet-due run of these tasks becomes due."""

        params = {"task_ids": json.dumps(task_ids)}
        rows = await self._read_op(lambda tx: tx.rows(tx.q.NEXT_DUE, params))
        value = rows[0]["due"] if rows else None
        return None if value is None else float(value)

    async def waiting_tasks(self) -> dict[str, int]:
        rows = await self._read_op(lambda tx: tx.rows(tx.q.WAITING_TASKS, {}))
        return {r["task_id"]: r["n"] for r in rows}

    async def cancel_requests(self, worker_id: str) -> list[str]:
        rows = await self._read_op(
            lambda tx: tx.rows(tx.q.CANCEL_REQUESTS, {"worker_id": worker_id})
        )
        return [r["id"] for r in rows]

    # --- a leased run ----------------------------------------------------------------

    async def checkpoint(
        self, lease: base.Lease, entries: list[runs.Entry], progress: base.Progress | None = None
    ) -> bool:
        return bool(await self._write_op(lambda tx: ops.checkpoint(tx, lease, entries, progress)))

    async def suspend(
        self,
        lease: base.Lease,
        due_at: float,
        executed_seconds: float,
        progress: base.Progress | None,
        waits: list[runs.Key] | None = None,
    ) -> bool:
        return bool(
            await self._write_op(
                lambda tx: transitions.suspend(tx, lease, due_at, executed_seconds, progress, waits)
            )
        )

    async def settled_waits(self, waits: list[tuple[str, runs.Key]]) -> list[tuple[str, runs.Key]]:
        found: list[tuple[str, runs.Key]] = await self._read_op(
            lambda tx: ops.settled_waits(tx, waits)
        )
        return found

    # --- child runs ------------------------------------------------------------------

    async def create_children(
        self, lease: base.Lease, entry: runs.Entry, children: list[base.NewRun]
    ) -> bool:
        done = bool(
            await self._write_and_notify(
                lambda tx: child_ops.create_children(tx, lease, entry, children)
            )
        )
        return done

    # --- tokens ----------------------------------------------------------------------

    async def create_token(
        self,
        lease: base.Lease,
        entry: runs.Entry,
        token_id: str,
        timeout_at: float | None,
        tags: list[str],
        key: str | None,
    ) -> str | None:
        found: str | None = await self._write_op(
            lambda tx: waits.create_token(tx, lease, entry, token_id, timeout_at, tags, key)
        )
        return found

    async def wait_token(self, lease: base.Lease, entry: runs.Entry) -> waits.WaitState | None:
        state: waits.WaitState | None = await self._write_op(
            lambda tx: waits.wait_token(tx, lease, entry)
        )
        return state

    async def complete_token(self, token_id: str, data: str) -> list[str]:
        woken: list[str] = await self._write_and_notify(
            lambda tx: waits.complete_token(tx, token_id, data)
        )
        return woken

    async def get_token(self, token_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._read_op(lambda tx: waits.get_token(tx, token_id))
        return found

    async def list_tokens(
        self, status: str | None, run_id: str | None, tag: str | None, limit: int
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._read_op(
            lambda tx: waits.list_tokens(tx, status, run_id, tag, limit)
        )
        return found

    async def secret(self, generated: str) -> str:
        value: str = await self._write_op(lambda tx: waits.secret(tx, generated))
        return value

    async def release(
        self, lease: base.Lease, executed_seconds: float, progress: base.Progress | None
    ) -> bool:
        done = bool(
            await self._write_and_notify(
                lambda tx: transitions.release(tx, lease, executed_seconds, progress)
            )
        )
        return done

    async def retry_later(
        self,
        lease: base.Lease,
        error: runs.RunError,
        delay: float,
        drop: list[runs.Key],
        progress: base.Progress | None,
    ) -> bool:
        return bool(
            await self._write_op(
                lambda tx: transitions.retry_later(tx, lease, error, delay, drop, progress)
            )
        )

    async def finish(
        self,
        lease: base.Lease,
        status: runs.RunStatus,
        output: str | None,
        error: runs.RunError | None,
        drop: list[runs.Key],
        progress: base.Progress | None,
    ) -> bool:
        done = bool(
            await self._write_and_notify(
                lambda tx: transitions.finish(tx, lease, status, output, error, drop, progress)
            )
        )
        return done

    # --- server reads

    async def queue_stats(self) -> list[admin.QueueStats]:
        found: list[admin.QueueStats] = await self._read_op(admin.queue_stats)
        return found

    async def list_workers(self, ended_within: float, limit: int) -> list[admin.WorkerStatus]:
        found: list[admin.WorkerStatus] = await self._read_op(
            lambda tx: admin.list_workers(tx, ended_within, limit)
        )
        return found

    async def run_counts(self) -> dict[str, int]:
        found: dict[str, int] = await self._read_op(admin.run_counts)
        return found

    async def step_durations(self) -> admin.StepDurations:
        found: admin.StepDurations = await self._read_op(admin.step_durations)
        return found

    async def trace_fingerprint(self, run_id: str) -> tuple[Any, ...]:
        found: tuple[Any, ...] = await self._read_op(lambda tx: admin.trace_fingerprint(tx, run_id))
        return found

    async def probe_write(self) -> None:
        await self._write_op(admin.probe_write)


def _list_runs(tx: ops.Tx, f: base.RunFilter) -> list[runs.Run]:

    params = {
        "statuses": None if f.status is None else json.dumps(f.status),
        "task_id": f.task_id,
        "tag": f.tag,
        "parent_id": f.parent_id,
        "root_id": f.root_id,
        "created_after": f.created_after,
        "created_before": f.created_before,
        "cursor": f.cursor,
        "limit": f.limit,
    }
    return [ops.run_from_row(r) for r in tx.rows(tx.q.LIST_RUNS, params)]
