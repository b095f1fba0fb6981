"""A run's trace: the run, its journal, its status transitions and its logs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from perdure import runs
from perdure.store import base


def _clock(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).astimezone().strftime("%H:%M:%S.%f")[:-3]


def settled_sleeps(entries: list[runs.Entry], now: float) -> list[runs.Entry]:
    """The journal as a reader should see it: a sleep whose deadline has passed is over
    (the journal keeps it pending, since a sleep's end is its deadline: no write needed)."""
    return [
        dataclasses.replace(e, status=runs.EntryStatus.COMPLETED, finished_at=e.wake_at)
        if e.kind is runs.EntryKind.SLEEP
        and e.status is runs.EntryStatus.PENDING
        and e.wake_at is not None
        and e.wake_at <= now
        else e
        for e in entries
    ]


@dataclass(frozen=True, kw_only=True)
class Trace:
    run: runs.Run
    entries: list[runs.Entry]
    events: list[base.RunEvent]
    logs: list[base.LogLine]

    def steps(self) -> list[runs.Entry]:
        return [e for e in self.entries if e.kind is runs.EntryKind.STEP]

    def to_json(self) -> dict[str, Any]:
        return {
            "run": {
                **self.run.__dict__,
                "status": self.run.status.value,
                "error": None if self.run.error is None else self.run.error.to_json(),
            },
            "entries": [
                {
                    "key": [e.key.branch, e.key.seq] + ([e.key.sub] if e.key.sub else []),
                    "kind": e.kind.value,
                    "name": e.name,
                    "status": e.status.value,
                    "result": None if e.result is None else json.loads(e.result),
                    "error": e.error,
                    "attempts": e.attempts,
                    "wake_at": e.wake_at,
                    "started_at": e.started_at,
                    "finished_at": e.finished_at,
                    "attempt": e.attempt,
                }
                for e in self.entries
            ],
            "events": [e.__dict__ for e in self.events],
            "logs": [line.__dict__ for line in self.logs],
        }

    def render(self) -> str:
        r = self.run
        lines = [
            f"run {r.id}  task {r.task_id}  {r.status.value}  attempt {r.attempts}"
            + (f"  recoveries {r.recoveries}" if r.recoveries else "")
        ]
        if r.error is not None:
            lines.append(f"  error: {r.error.type}: {r.error.message}")
        if r.output is not None:
            lines.append(f"  output: {json.dumps(r.output)[:200]}")
        lines.append("journal:")
        for e in self.entries:
            if e.kind is runs.EntryKind.VALUE:
                continue
            tries = f"  tries {e.attempts}" if e.kind is runs.EntryKind.STEP else ""
            lines.append(
                f"  [{e.key.branch}, {e.key.seq}]  {e.kind.value:<5} {e.name:<24} "
                f"{e.status.value:<9}{tries}"
            )
        lines.append("transitions:")
        for ev in self.events:
            lines.append(
                f"  {_clock(ev.at)}  {ev.from_status or '-'} -> {ev.to_status}"
                f"  (attempt {ev.attempt}{', ' + ev.detail if ev.detail else ''})"
            )
        if self.logs:
            lines.append("logs:")
            lines += [f"  {_clock(x.at)} {x.level} {x.message}" for x in self.logs]
        return "\n".join(lines)
