"""When may a run suspend? (DESIGN §3) Pure: reads the branches of a run, decides nothing
else. A run is quiescent when no branch runs a step or a durable operation, and every live
branch is blocked on a durable wait or on other branches of the run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perdure.branches import Branch
    from perdure.execution import Execution


def deadline(execution: Execution) -> float | None:
    """The earliest deadline of the run's waits when it is quiescent; otherwise None."""
    deadlines = []
    for branch in execution.branches:
        if not branch.live:
            continue
        if branch.in_step or branch.busy:
            return None
        if branch.wait_deadline is not None:
            deadlines.append(branch.wait_deadline)
        elif branch.thread_ident is not None or not _blocked_on_run(execution, branch):
            return None
    return min(deadlines) if deadlines else None


def _blocked_on_run(execution: Execution, branch: Branch) -> bool:
    """Whether the branch's task awaits other branches of the run (a task, a gather, a
    TaskGroup or asyncio.wait over its children), not something outside it."""
    waiter = getattr(branch.task, "_fut_waiter", None)
    if waiter is None:
        return False  # running, or ready to run
    tasks = {b.task for b in execution.branches}
    if waiter in tasks:
        return True
    children = getattr(waiter, "_children", None)  # asyncio.gather
    if children is not None:
        return all(c.done() or c in tasks for c in children)
    return any(child.live for child in branch.children)  # TaskGroup, asyncio.wait
