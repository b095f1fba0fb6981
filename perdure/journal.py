"""The replay core: journal keys, matching, NonDeterminismError. Pure: no I/O.

Each branch of a run (the body is "0"; the k-th asyncio task a branch spawns is
"<branch>.k") numbers its durable operations 1, 2, 3...; the key of an operation is
(branch, seq). Values from now/random/uuid4 are keyed by (branch, the preceding seq,
"<kind>:<index>") and take no sequence number, so adding one never shifts later keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from perdure import exceptions, runs


def child_branch(parent: str, k: int) -> str:
    return f"{parent}.{k}"


def value_key(branch: str, after_seq: int, kind: str, index: int) -> runs.Key:
    return runs.Key(branch=branch, seq=after_seq, sub=f"{kind}:{index}")


def describe(kind: runs.EntryKind, name: str) -> str:
    return f"{kind.value} {name!r}" if kind is runs.EntryKind.STEP else kind.value


class Journal:
    """The entries of one run, indexed by key; the in-memory mirror of what is durable."""

    def __init__(self, entries: Iterable[runs.Entry] = ()) -> None:
        self._entries: dict[runs.Key, runs.Entry] = {e.key: e for e in entries}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: runs.Key) -> bool:
        return key in self._entries

    def get(self, key: runs.Key) -> runs.Entry | None:
        return self._entries.get(key)

    def put(self, entry: runs.Entry) -> None:
        self._entries[entry.key] = entry

    def entries(self) -> list[runs.Entry]:
        return list(self._entries.values())

    def match(self, key: runs.Key, kind: runs.EntryKind, name: str) -> runs.Entry | None:
        """The entry recorded at `key` for this operation, None when there is none (the
        operation is live), or NonDeterminismError when another operation is recorded."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.kind is not kind or entry.name != name:
            raise exceptions.NonDeterminismError(mismatch_message(key, kind, name, entry))
        return entry


def mismatch_message(key: runs.Key, kind: runs.EntryKind, name: str, found: runs.Entry) -> str:
    return (
        f"journal position {key}: the code asked for {describe(kind, name)}, but the journal "
        f"holds {describe(found.kind, found.name)} there (recorded in attempt {found.attempt}). "
        "The task's code changed under a run that had started; restore the old order of "
        "durable calls, or give the changed code a new version. After a fix, "
        "`perdure runs retry` resumes the run on its kept journal."
    )
