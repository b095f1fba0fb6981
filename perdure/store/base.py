"""The Store: the one narrow interface between perdure and its database.

Every backend (SQLite now, PostgreSQL next) implements this protocol, and one contract
test suite (tests/store) runs against each. Times are epoch seconds from the database
clock. Writes to a leased run carry its lease; a write whose lease is no longer current
changes nothing and returns False, so a paused or partitioned worker cannot record a
duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from perdure import runs

if TYPE_CHECKING:
    from perdure.store.admin import QueueStats, StepDurations, WorkerStatus
    from perdure.store.waits import WaitState


@dataclass(frozen=True, kw_only=True)
class NewRun:
    """A run to create; `payload` is JSON text already validated by the caller."""

    id: str
    task_id: str
    queue: str
    payload: str
    root_id: str
    concurrency_key: str | None = None
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    parent_id: str | None = None
    idempotency_key: str | None = None
    idempotency_key_ttl: float = 30 * 86400
    version: str | None = None
    delay: float | None = None
    ttl: float | None = None
    # A child run the parent waits on: the parent's journal entry, settled when every
    # child of that entry has ended (index: the child's place in a batch).
    parent_entry: runs.Key | None = None
    batch_index: int | None = None


@dataclass(frozen=True, kw_only=True)
class Lease:
    """The claim a worker holds on a run: its id and the per-claim fencing token."""

    run_id: str
    token: str


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A run handed to a worker, with everything needed to execute it (journal included)."""

    lease: Lease
    task_id: str
    payload: str
    attempt: int
    recoveries: int
    tags: list[str]
    parent_id: str | None
    root_id: str
    idempotency_key: str | None
    version: str | None
    executed_seconds: float
    resumed_from: runs.RunStatus
    cancel_requested: bool
    journal: Sequence[runs.Entry]  # a claim's store gives `runs.Recorded`
    db_now: float


@dataclass(frozen=True, kw_only=True)
class LogLine:
    attempt: int
    branch: str | None
    seq: int | None
    level: str
    message: str
    at: float


@dataclass(frozen=True, kw_only=True)
class RunEvent:
    at: float
    from_status: str | None
    to_status: str
    attempt: int
    worker_id: str | None
    detail: str | None


@dataclass(frozen=True, kw_only=True)
class RunFilter:
    status: list[str] | None = None
    task_id: str | None = None
    tag: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    limit: int = 100
    cursor: str | None = None  # the id of the last run of the previous page


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    version: str | None
    concurrency: int


@dataclass(frozen=True, kw_only=True)
class Progress:
    """What a checkpoint carries besides journal entries: logs and the latest metadata."""

    logs: list[LogLine] = field(default_factory=list)
    metadata: dict[str, Any] | None = None  # keys set since the last checkpoint


class Store(Protocol):
    """The contract each backend fulfils. All methods are safe to call concurrently."""

    # --- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and check the schema; raises StoreError (changing nothing) if the
        database is not perdure's, is corrupt, or is newer than this code."""

    async def close(self) -> None:
        """Release connections and threads. Idempotent."""

    async def migrate(self) -> int:
        """Apply pending migrations (safe from several processes at once); returns the
        schema version."""

    async def now(self) -> float:
        """The database clock."""

    # --- client ----------------------------------------------------------------------
    async def create_run(self, new: NewRun) -> tuple[str, bool]:
        """Create a run, or, when `new.idempotency_key` is held for `new.task_id`, return
        the holder: (run id, True). Atomic: concurrent calls with one key make one run."""

    async def get_run(self, run_id: str) -> runs.Run | None:
        """The run, or None."""

    async def list_runs(self, filter: RunFilter) -> list[runs.Run]:
        """Runs matching the filter, newest first, at most `filter.limit`."""

    async def journal(self, run_id: str) -> list[runs.Entry]:
        """The run's journal entries in commit order."""

    async def entry(self, run_id: str, key: runs.Key) -> runs.Entry | None:
        """One journal entry (a settled wait, say), or None."""

    async def logs(self, run_id: str) -> list[LogLine]:
        """The run's logs in order."""

    async def events(self, run_id: str) -> list[RunEvent]:
        """The run's status transitions in order."""

    async def cancel_run(self, run_id: str) -> runs.Run:
        """Cancel: a queued, delayed or retrying run ends `canceled` at once; a running
        one gets a cancellation request its worker acts on; a waiting one gets the request
        and is woken, so its code may clean up. Raises RunNotFound or, for a finished run,
        InvalidTransition."""

    async def retry_run(self, run_id: str, key_ttl: float) -> runs.Run:
        """Take a failed, timed-out or canceled run back to queued for a new attempt on
        its kept journal, re-taking its idempotency key if still free."""

    async def replay_run(
        self, run_id: str, new_id: str, payload: str | None, before: runs.Key | None
    ) -> str:
        """A new run of the same task (new payload if given), with a copy of the journal
        entries committed before the entry at `before` (none when `before` is None)."""

    # --- workers ---------------------------------------------------------------------
    async def register_worker(self, worker: WorkerInfo) -> None:
        """Record the worker and take the liveness lock that dies with its process."""

    async def stop_worker(self, worker_id: str) -> None:
        """Mark a worker stopped (after it released its runs) and drop its lock."""

    def heartbeat(self, worker_id: str) -> bool:
        """Renew the worker's heartbeat (blocking; called from the heartbeat thread).
        False when the worker was declared dead: it must stop executing at once."""

    async def reap_workers(self, lease_seconds: float) -> list[str]:
        """Declare dead the workers whose liveness lock is free or whose heartbeat is
        older than `lease_seconds`; their runs become claimable. Returns their ids."""

    async def set_queue_limits(self, limits: dict[str, int | None]) -> None:
        """Declare queues and their concurrency limits."""

    async def claim(
        self,
        worker_id: str,
        task_ids: list[str],
        version: str | None,
        limit: int,
        max_recoveries: int,
    ) -> list[Claim]:
        """Claim up to `limit` runnable runs of these tasks: due queued, delayed, retrying
        and waiting runs, within their queue's limit per concurrency key, and running runs
        of dead workers (a takeover, counted; past `max_recoveries` the run ends failed
        with WorkerCrashed instead). Each claim gets a fresh lease token."""

    async def waiting_tasks(self) -> dict[str, int]:
        """How many unfinished, unclaimed runs each task id has (for a worker to name
        the ones its app does not define)."""

    async def cancel_requests(self, worker_id: str) -> list[str]:
        """Ids of runs this worker holds that have a cancellation request."""

    # --- a leased run ----------------------------------------------------------------
    async def checkpoint(
        self, lease: Lease, entries: list[runs.Entry], progress: Progress | None = None
    ) -> bool:
        """Record (insert or update) journal entries, logs and metadata atomically."""

    async def suspend(
        self,
        lease: Lease,
        due_at: float,
        executed_seconds: float,
        progress: Progress | None,
        waits: list[runs.Key] | None = None,
    ) -> bool:
        """Mark the run `waiting` until `due_at`, free its slot and its lease. When one of
        the `waits` (journal entries of a token or children) was settled meanwhile, it is
        due at once."""

    async def settled_waits(self, waits: list[tuple[str, runs.Key]]) -> list[tuple[str, runs.Key]]:
        """Which of these waits (run id, journal key) are no longer pending."""

    async def release(
        self, lease: Lease, executed_seconds: float, progress: Progress | None
    ) -> bool:
        """Give the run back (worker shutdown): claimable again at once, same attempt."""

    async def retry_later(
        self,
        lease: Lease,
        error: runs.RunError,
        delay: float,
        drop: list[runs.Key],
        progress: Progress | None,
    ) -> bool:
        """End the attempt: `retrying` until now + delay; delete the `drop` entries (step
        failures that escaped the task body, so those steps run again)."""

    async def finish(
        self,
        lease: Lease,
        status: runs.RunStatus,
        output: str | None,
        error: runs.RunError | None,
        drop: list[runs.Key],
        progress: Progress | None,
    ) -> bool:
        """End the run with a terminal status; frees the idempotency key when the status
        does. The `drop` entries stay for the trace; `retry_run` deletes them."""

    # --- tokens ----------------------------------------------------------------------
    async def create_token(
        self,
        lease: Lease,
        entry: runs.Entry,
        token_id: str,
        timeout_at: float | None,
        tags: list[str],
        key: str | None,
    ) -> str | None:
        """Create a waiting token and record `entry` (its creation) in one transaction;
        returns the token's id (an open token holding `key` is reused), None if the lease
        is lost."""

    async def wait_token(self, lease: Lease, entry: runs.Entry) -> WaitState | None:
        """Record a wait on the token named by `entry.name`: pending while it waits,
        settled (completed with its data, or failed) when it is no longer waiting. A token
        past its timeout times out here. None if the lease is lost."""

    async def complete_token(self, token_id: str, data: str) -> list[str]:
        """Complete a waiting token with JSON `data`: the first completion wins (a second
        one raises InvalidTransition; unknown: TokenNotFound; timed out: InvalidTransition).
        Settles every wait on it and makes the waiting runs due; returns their ids."""

    async def get_token(self, token_id: str) -> dict[str, Any] | None:
        """The token's row, or None."""

    async def list_tokens(
        self, status: str | None, run_id: str | None, tag: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Tokens matching the filters, newest first."""

    async def secret(self, generated: str) -> str:
        """The secret that signs token URLs, stored on first use (`generated`) so every
        process shares it."""

    # --- child runs ------------------------------------------------------------------
    async def create_children(
        self, lease: Lease, entry: runs.Entry, children: list[NewRun]
    ) -> bool:
        """Create the child runs (each at most once: an existing id is kept) and record
        the parent's `entry` in one transaction. When every child of a waiting entry has
        already ended, the entry is settled at once. False if the lease is lost."""

    # --- server reads ----------------------------------------------------------------
    async def queue_stats(self) -> list[QueueStats]:
        """Every declared queue and every queue holding unfinished runs, by name: its
        limit, runs due but not running (depth), running, suspended, and not yet due."""

    async def list_workers(self, ended_within: float, limit: int) -> list[WorkerStatus]:
        """Live workers and those that stopped or died in the last `ended_within` seconds,
        newest first, with the number of runs each holds."""

    async def run_counts(self) -> dict[str, int]:
        """How many runs have each status."""

    async def step_durations(self) -> StepDurations:
        """A histogram of recorded steps' durations (first start to result)."""

    async def trace_fingerprint(self, run_id: str) -> tuple[Any, ...]:
        """A value that changes whenever the run's journal, logs or transitions change."""

    async def probe_write(self) -> None:
        """One write transaction changing nothing: times the path checkpoints take."""
