"""The replay core: journal keys, matching, NonDeterminismError. Pure: no I/O.

Each branch of a run (the body is "0"; the k-th asyncio task a branch spawns is
"<branch>.k") numbers its durable operations 1, 2, 3...; the key of an operation is
(branch, seq). Values from now/random/uuid4 are keyed by (branch, the preceding seq,
"<kind>:<index>") and take no sequence number, so adding one never shifts later keys.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from perdure import exceptions, runs


def child_branch(parent: str, k: int) -> str:
    return f"{parent}.{k}"


def value_key(branch: str, after_seq: int, kind: str, index: int) -> runs.Key:
    return runs.Key(branch=branch, seq=after_seq, sub=f"{kind}:{index}")


def describe(kind: runs.EntryKind, name: str) -> str:
    return f"{kind.value} {name!r}" if kind is runs.EntryKind.STEP else kind.value


class Journal:
    """The entries of one run, indexed by key; the in-memory mirror of what is durable.

    Built from a claim's `runs.Recorded`, it keeps the rows and makes an entry of one
    only when it is asked for; a replayed step is matched on its row alone."""

    def __init__(self, entries: Iterable[runs.Entry] = ()) -> None:
        self._entries: dict[runs.Key, runs.Entry] = {}
        self._rows: dict[tuple[str, int, str], tuple[Any, ...]] = {}
        if isinstance(entries, runs.Recorded):
            self._rows = {(row[1], row[2], row[3]): row for row in entries.rows}
        else:
            self._entries = {e.key: e for e in entries}

    def __len__(self) -> int:
        return len(self._entries) + len(self._rows)

    def __contains__(self, key: runs.Key) -> bool:
        return key in self._entries or key in self._rows

    def get(self, key: runs.Key) -> runs.Entry | None:
        entry = self._entries.get(key)
        if entry is None and self._rows:
            row = self._rows.pop(key, None)
            if row is not None:
                entry = self._entries[key] = runs.entry_of(row)
        return entry

    def put(self, entry: runs.Entry) -> None:
        if self._rows:
            self._rows.pop(entry.key, None)
        self._entries[entry.key] = entry

    def entries(self) -> list[runs.Entry]:
        return [*self._entries.values(), *map(runs.entry_of, self._rows.values())]

    def match(self, key: runs.Key, kind: runs.EntryKind, name: str) -> runs.Entry | None:
        """The entry recorded at `key` for this operation, None when there is none (the
        operation is live), or NonDeterminismError when another operation is recorded."""
        entry = self.get(key)
        if entry is None:
            return None
        if entry.kind is not kind or entry.name != name:
            raise exceptions.NonDeterminismError(mismatch_message(key, kind, name, entry))
        return entry

    def completed_step(self, key: runs.Key, name: str) -> str | Missing | None:
        """The result text of step `name` recorded as completed at `key`, read off its
        row; MISSING for anything else: no row (none recorded, or made an entry already
        by `get`), or another entry (`match` tells which)."""
        row = self._rows.get(key)  # its columns: see runs.entry_of
        if row is not None and row[4] == _STEP and row[5] == name and row[6] == _COMPLETED:
            result: str | None = row[7]
            return result
        return MISSING


_STEP, _COMPLETED = runs.EntryKind.STEP, runs.EntryStatus.COMPLETED  # equal to a row's text


class Missing(enum.Enum):
    """The answer of `Journal.completed_step` where no completed step is recorded."""

    MISSING = enum.auto()


MISSING = Missing.MISSING


def mismatch_message(key: runs.Key, kind: runs.EntryKind, name: str, found: runs.Entry) -> str:
    return (
        f"journal position {key}: the code asked for {describe(kind, name)}, but the journal "
        f"holds {describe(found.kind, found.name)} there (recorded in attempt {found.attempt}). "
        "The task's code changed under a run that had started; restore the old order of "
        "durable calls, or give the changed code a new version. After a fix, "
        "`perdure runs retry` resumes the run on its kept journal."
    )
