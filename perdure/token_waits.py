"""The durable token operations of a run: create a token, wait for it.

Creating a token records it in the same transaction as its journal entry, with an id
derived from the run and the entry's key: a replay re-attaches to the same token, so a URL
already sent stays valid. A wait is a journal entry settled by the completion itself.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from perdure import exceptions, runs, signals, tokens

if TYPE_CHECKING:
    from perdure.branches import Branch
    from perdure.execution import Execution

CREATE = "create_token"


async def create(
    ex: Execution, branch: Branch, timeout: float | None, tags: list[str], key: str | None
) -> tokens.Token:
    await ex.enter(branch)
    entry_key = branch.next_key()
    entry = ex.match(entry_key, runs.EntryKind.TOKEN, CREATE)
    if entry is None:
        ex.frontier(branch)
        now = ex.db_now()
        entry = runs.Entry(
            key=entry_key,
            kind=runs.EntryKind.TOKEN,
            name=CREATE,
            status=runs.EntryStatus.COMPLETED,
            started_at=now,
            finished_at=now,
            attempt=ex.attempt,
        )
        await ex.flush_values()
        created = await ex.store.create_token(
            ex.lease,
            entry,
            tokens.token_id(ex.run_id, entry_key),
            None if timeout is None else now + timeout,
            tags,
            key,
        )
        if created is None:
            ex.freeze(signals.LeaseLost())
            ex.check_frozen()
        assert created is not None
        entry = runs.Entry(**{**entry.__dict__, "result": json.dumps({"id": created})})
        ex.journal.put(entry)
    token = json.loads(entry.result or "{}")["id"]
    return tokens.Token(
        id=token, url=tokens.url_for(ex.settings.public_url, ex.worker.secret, token)
    )


async def wait(ex: Execution, branch: Branch, token: tokens.Token | str) -> Any:
    token_id = token if isinstance(token, str) else token.id
    await ex.enter(branch)
    key = branch.next_key()
    entry = ex.match(key, runs.EntryKind.WAIT, token_id)
    started = ex.db_now() if entry is None else entry.started_at
    while True:
        if entry is not None and entry.status is runs.EntryStatus.COMPLETED:
            return json.loads(entry.result or "null")
        if entry is not None and entry.status is runs.EntryStatus.FAILED:
            message = (entry.error or {}).get("message", f"token {token_id} timed out")
            raise exceptions.WaitTimeout(message)
        pending = runs.Entry(
            key=key,
            kind=runs.EntryKind.WAIT,
            name=token_id,
            status=runs.EntryStatus.PENDING,
            started_at=started,
            attempt=ex.attempt,
        )
        await ex.flush_values()
        state = await ex.store.wait_token(ex.lease, pending)
        if state is None:
            ex.freeze(signals.LeaseLost())
            ex.check_frozen()
        assert state is not None
        entry = _settled(pending, state)
        ex.journal.put(entry)
        if entry.status is runs.EntryStatus.PENDING:
            await ex.wait_until(branch, state.timeout_at, settles=key)
            entry = None  # woken (settled, timed out, or spuriously): look again


def _settled(pending: runs.Entry, state: Any) -> runs.Entry:
    if state.status == "waiting":
        return runs.Entry(**{**pending.__dict__, "wake_at": state.timeout_at})
    if state.status == "completed":
        return runs.Entry(
            **{**pending.__dict__, "status": runs.EntryStatus.COMPLETED, "result": state.data}
        )
    from perdure.store import waits

    return runs.Entry(
        **{
            **pending.__dict__,
            "status": runs.EntryStatus.FAILED,
            "error": waits.timeout_error(pending.name, state.status),
        }
    )
