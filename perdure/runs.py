"""Domain values: runs, their statuses, errors and journal entries. No I/O."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar, overload

T = TypeVar("T")


_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base 32, lowercase


def base32_digits(value: int) -> str:
    """The 26 base-32 digits of `value`'s low 130 bits, the most significant first: the
    body of every id."""
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_BASE32[digit])
    return "".join(reversed(chars))


class RunStatus(enum.StrEnum):
    """Where a run is in its lifecycle (DESIGN.md §4)."""

    DELAYED = "delayed"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"
    PENDING_VERSION = "pending_version"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELED,
        RunStatus.TIMED_OUT,
        RunStatus.EXPIRED,
    }
)
# Statuses that free an idempotency key: the key may start a new run.
KEY_FREEING = frozenset(
    {RunStatus.FAILED, RunStatus.CANCELED, RunStatus.TIMED_OUT, RunStatus.EXPIRED}
)
# Statuses `runs.retry` takes back to queued.
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELED})


@dataclass(frozen=True, kw_only=True)
class RunError:
    """Why a run, an attempt or a step failed."""

    type: str
    message: str
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RunError | None:
        if data is None:
            return None
        return cls(type=data["type"], message=data["message"], traceback=data.get("traceback"))


@dataclass(frozen=True, kw_only=True)
class Run:
    """One execution of a task with one payload, as `app.runs.get` returns it."""

    id: str
    task_id: str
    status: RunStatus
    payload: Any
    output: Any
    error: RunError | None
    attempts: int
    tags: list[str]
    metadata: dict[str, Any]
    parent_id: str | None
    root_id: str
    idempotency_key: str | None
    version: str | None
    queue: str
    concurrency_key: str | None
    priority: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    recoveries: int = 0


class EntryKind(enum.StrEnum):
    """The kinds of durable operations a journal records."""

    STEP = "step"
    SLEEP = "sleep"
    VALUE = "value"  # now / random / uuid4
    TOKEN = "token"  # create_token
    WAIT = "wait"  # wait_for_token; the entry's name is the token id
    CHILD = "child"  # trigger / trigger_and_wait; the entry's name is the child's task id
    BATCH = "batch"  # batch_trigger_and_wait


class EntryStatus(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # a step that failed for good
    RETRYING = "retrying"  # a step between attempts; wake_at is when the next one starts
    PENDING = "pending"  # a wait; wake_at is its deadline


def builder(cls: type[T]) -> Callable[..., T]:
    """A builder of `cls`, a frozen dataclass, from every one of its fields: it fills the
    instance's __dict__ at once, where the generated __init__ sets each field through
    object.__setattr__ (2 µs for an Entry). The instance is the same; callers pass every
    field, defaults included. For the hot paths only: elsewhere, the class itself."""
    new = object.__new__

    def build(**fields: Any) -> T:
        made = new(cls)
        made.__dict__.update(fields)
        return made

    return build


class Key(NamedTuple):
    """A journal key: the branch and the sequence number of a durable operation in it.

    A tuple, so that it hashes and compares in C: a replay looks one up per durable call,
    and a journal read at a claim is indexed by the plain (branch, seq, sub) tuples of its
    rows, which are equal to their keys."""

    branch: str
    seq: int
    sub: str = ""  # for values: "<kind>:<index>" after operation `seq`

    def __str__(self) -> str:
        base = f"[{self.branch!r}, {self.seq}]"
        return f"{base} {self.sub}" if self.sub else base


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A journal entry as stored: the record of one durable operation."""

    key: Key
    kind: EntryKind
    name: str
    status: EntryStatus
    result: str | None = None  # JSON text of the result (for values, of the value)
    error: dict[str, Any] | None = None  # {"type", "message", "traceback", "module", "args"}
    attempts: int = 0
    wake_at: float | None = None  # epoch seconds, database clock
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 1  # the run attempt that recorded it
    order: int = 0  # commit order within the run (for forks)
    extra: dict[str, Any] = field(default_factory=dict)


_KINDS = {kind.value: kind for kind in EntryKind}
_STATUSES = {status.value: status for status in EntryStatus}
_entry = builder(Entry)


def entry_of(row: Sequence[Any]) -> Entry:
    """An entry from its stored row: order, branch, seq, sub, kind, name, status, result,
    error (JSON text), attempts, wake_at, started_at, finished_at, attempt (the store's
    ENTRY_COLUMNS), and whatever columns follow those."""
    order, branch, seq, sub, kind, name, status, result, error, attempts = row[:10]
    wake_at, started_at, finished_at, attempt = row[10:14]
    return _entry(
        key=Key(branch, seq, sub),
        kind=_KINDS[kind],
        name=name,
        status=_STATUSES[status],
        result=result,
        error=None if error is None else json.loads(error),
        attempts=attempts,
        wake_at=wake_at,
        started_at=started_at,
        finished_at=finished_at,
        attempt=attempt,
        order=order,
        extra={},
    )


class Recorded(Sequence[Entry]):
    """A run's journal as a claim read it: its stored rows (see `entry_of`), each made an
    Entry only when asked for. A replay asks for few: a recorded step is matched on its
    row (`journal.Journal.completed_step`), so a claim of a 10,000-entry journal builds
    no entry at all."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Entry: ...
    @overload
    def __getitem__(self, index: slice) -> list[Entry]: ...
    def __getitem__(self, index: int | slice) -> Entry | list[Entry]:
        if isinstance(index, slice):
            return [entry_of(row) for row in self.rows[index]]
        return entry_of(self.rows[index])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Recorded({list(self)!r})"


@dataclass(frozen=True, kw_only=True)
class Result(Generic[T]):
    """One child's outcome in `batch_trigger_and_wait`: never raises by itself."""

    run_id: str
    ok: bool
    output: T | None = None
    error: RunError | None = None

    def unwrap(self) -> T:
        """The output, or ChildRunFailed carrying the child's error."""
        if not self.ok:
            from perdure import exceptions

            raise exceptions.ChildRunFailed(self.run_id, self.error)
        return self.output  # type: ignore[return-value]
