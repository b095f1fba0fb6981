"""Branches of a run: the body and every asyncio task it spawns, each with a stable id.

The worker installs `task_factory` on its loop: a task created while a branch is current
becomes that branch's k-th child, "<parent>.k", so two branches of a `gather` never take
each other's journal keys, whatever order they finish in. Plain `def` bodies run on a
thread of their own; a `Bridge` carries their durable calls to the loop and back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from perdure import journal, runs, runtime

if TYPE_CHECKING:
    from perdure.execution import Execution

_new_key = tuple.__new__  # a Key without its Python-level __new__: one per durable call


class Branch:
    """One line of execution of a run, numbering its durable operations."""

    def __init__(self, execution: Execution, id: str) -> None:
        self.execution = execution
        self.id = id
        self.seq = 0
        self.spawned = 0
        self.values: dict[str, int] = {}
        self.task: asyncio.Task[Any] | None = None
        self.thread_ident: int | None = None
        self.bridge: Bridge | None = None
        self.wait_deadline: float | None = None
        self.wait_key: runs.Key | None = None  # the entry whose settlement ends the wait
        self.in_step = 0
        self.busy = 0  # durable operations under way (a store write, say)
        self.children: list[Branch] = []
        self.cancel_delivered = False

    def __repr__(self) -> str:
        return f"<Branch {self.id} of {self.execution.run_id}>"

    def next_key(self) -> runs.Key:
        self.seq += 1
        if self.values:
            self.values.clear()
        return _new_key(runs.Key, (self.id, self.seq, ""))

    @property
    def replaying(self) -> bool:
        """True while the code re-runs what the journal already holds."""
        return runs.Key(branch=self.id, seq=self.seq + 1) in self.execution.journal

    @property
    def step_key(self) -> str:
        return f"{self.execution.run_id}:{self.id}:{self.seq}"

    def spawn(self) -> Branch:
        self.spawned += 1
        child = Branch(self.execution, journal.child_branch(self.id, self.spawned))
        self.children.append(child)
        self.execution.branches.append(child)
        return child

    @property
    def live(self) -> bool:
        if self.thread_ident is not None:
            return not self.execution.body_done
        return self.task is not None and not self.task.done()

    def check_caller(self, call: str) -> None:
        """A durable call must come from the branch's own task or thread."""
        if self.thread_ident is not None:
            if threading.get_ident() == self.thread_ident:
                return
        else:
            try:
                if asyncio.current_task() is self.task:
                    return
            except RuntimeError:
                pass
        raise RuntimeError(
            f"perdure.{call}() was called from a task or thread the run did not create; "
            "make durable calls from the task body or from asyncio tasks it starts"
        )


class Bridge:
    """Runs a `def` body's durable calls on the loop while its thread waits, and runs the
    `def` steps those calls need back on the body's own thread."""

    def __init__(self, execution: Execution, loop: asyncio.AbstractEventLoop) -> None:
        self.execution = execution
        self.loop = loop
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None]
        self._calls = queue.SimpleQueue()

    def run(self, branch: Branch, coro: Coroutine[Any, Any, Any]) -> Any:
        """On the body thread: run `coro` (a durable call of the body's `branch`) on the
        loop, serving step calls meanwhile."""
        outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def finished(task: asyncio.Task[Any]) -> None:
            self.execution.op_tasks.discard(task)
            if task.cancelled():
                outcome.set_exception(asyncio.CancelledError())
            elif (error := task.exception()) is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(task.result())
            self._calls.put(None)

        def start() -> None:
            task = asyncio.Task(coro, loop=self.loop, context=contextvars.Context())
            self.execution.op_tasks.add(task)
            task.add_done_callback(finished)

        self.loop.call_soon_threadsafe(start)
        while (item := self._calls.get()) is not None:
            fn, future = item
            try:
                result = fn()
            except BaseException as error:
                self.loop.call_soon_threadsafe(_set_exception, future, error)
            else:
                self.loop.call_soon_threadsafe(_set_result, future, result)
        try:
            return outcome.result()
        except asyncio.CancelledError:
            if self.execution.frozen is not None:
                raise self.execution.frozen from None
            branch.cancel_delivered = True  # its cleanup may go on
            raise

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """On the loop: run `fn` on the body thread (which is waiting in `run`)."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self._calls.put((fn, future))
        return future


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context | None = None,
) -> asyncio.Task[Any]:
    """Installed on the worker's loop: tasks created inside a run become its branches."""
    ctx = context.copy() if context is not None else contextvars.copy_context()
    parent = ctx.get(_current)
    if not isinstance(parent, Branch):
        return asyncio.Task(coro, loop=loop, context=ctx)
    child = parent.spawn()
    ctx.run(_current.set, child)
    task = asyncio.Task(coro, loop=loop, context=ctx)
    child.task = task
    task.add_done_callback(child.execution.branch_done)
    return task


_current = runtime.current
