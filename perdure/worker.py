"""The worker: claim runs, execute them by replaying their journal, keep them alive.

Liveness is per worker, not per run: the worker holds a lock that dies with its process
(noticed at once by the others), and renews one heartbeat row from a thread, only while
its event loop keeps ticking, so a hung loop loses its runs to other workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any

from perdure import branches, exceptions, runs, signals
from perdure.app import App, new_id
from perdure.execution import Execution
from perdure.store import base

log = logging.getLogger("perdure.worker")


class Worker:
    def __init__(self, app: App, *, concurrency: int | None = None) -> None:
        self.app = app
        self.settings = app.settings
        self.concurrency = concurrency or self.settings.worker_concurrency
        self.id = new_id("wrk")
        self.active: dict[str, Execution] = {}
        self._executing: dict[str, asyncio.Task[Any]] = {}  # run id -> its execution's task
        self.task_ids = sorted(app.tasks)
        self._background: set[asyncio.Task[Any]] = set()
        self._kick = asyncio.Event()
        self._stopping = False
        self._tick = time.monotonic()
        self._heartbeat_stop = threading.Event()
        self._reregistering = False  # between losing its identity and registering anew
        self._watched: dict[tuple[str, runs.Key], set[asyncio.Future[None]]] = {}
        self.store: base.Store
        self.body_pool = concurrent.futures.ThreadPoolExecutor(self.concurrency, "perdure-body")
        self.step_pool = concurrent.futures.ThreadPoolExecutor(self.concurrency, "perdure-step")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A worker-internal task: never a branch of a run."""
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set, then shut down gracefully."""
        stop = stop or asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.loop.set_task_factory(branches.task_factory)  # type: ignore[arg-type]
        self.store = await self.app.store()
        self.secret = await self.app.token_secret()
        await self._register()
        await self.store.set_queue_limits(self.app.queue_limits)
        await self._name_unknown_tasks()
        await self.store.reap_workers(self.settings.lease_seconds)  # before the first claim
        heartbeat = threading.Thread(target=self._heartbeat, name="perdure-heartbeat", daemon=True)
        heartbeat.start()
        loops = [
            self.spawn(self._claim_loop()),
            self.spawn(self._maintenance_loop()),
            self.spawn(self._wakeup_loop()),
            self.spawn(self._tick_loop()),
        ]
        try:
            await stop.wait()
        finally:
            await self._shutdown(loops)
            self._heartbeat_stop.set()
            heartbeat.join(timeout=5)
            self.body_pool.shutdown(wait=False, cancel_futures=True)
            self.step_pool.shutdown(wait=False, cancel_futures=True)

    async def _register(self) -> None:
        info = base.WorkerInfo(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=self.settings.version,
            concurrency=self.concurrency,
        )
        await self.store.register_worker(info)

    async def _name_unknown_tasks(self) -> None:
        for task_id, count in sorted((await self.store.waiting_tasks()).items()):
            if task_id not in self.app.tasks:
                log.warning(
                    "%d unfinished run(s) are for task %r, which this app does not define; "
                    "they wait for a worker whose app does",
                    count,
                    task_id,
                )

    # --- claiming ----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            # Cleared before looking for work, so a wake-up that arrives while we look
            # (during the claim or next_due) is kept for the wait below, never lost.
            self._kick.clear()
            free = self.concurrency - len(self.active)
            claimed = 0
            if free > 0:
                try:
                    claims = await self.store.claim(
                        self.id,
                        self.task_ids,
                        self.settings.version,
                        free,
                        self.settings.max_recoveries,
                    )
                except Exception:
                    log.exception("claiming runs failed; retrying")
                    claims = []
                for claim in claims:
                    self._start(claim)
                claimed = len(claims)
                if claimed == free:
                    continue
            await self._wait_for_work(free - claimed > 0)

    async def _wait_for_work(self, has_room: bool) -> None:
        timeout = self.settings.poll_seconds
        next_due = getattr(self.store, "next_due", None)
        if has_room and next_due is not None:
            due = await next_due(self.task_ids)
            if due is not None:
                timeout = min(timeout, max(due - time.time(), 0.0) + 0.001)
        try:
            async with asyncio.timeout(timeout):
                await self._kick.wait()
        except TimeoutError:
            pass

    def kick(self) -> None:
        self._kick.set()

    def _start(self, claim: base.Claim) -> None:
        run_id = claim.lease.run_id
        execution = Execution(self, self.app.tasks[claim.task_id], claim)
        # A run claimed again while its last execution here still winds down (it suspended
        # and its wait was settled at once): that execution's lease is void, so its writes
        # are refused; the new one starts once it is gone.
        previous = self._executing.get(run_id)
        self.active[run_id] = execution
        self._executing[run_id] = self.spawn(self._execute(execution, previous))

    async def _execute(self, execution: Execution, previous: asyncio.Task[Any] | None) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
                if execution.frozen is not None:  # shut down or cut off meanwhile
                    await self.hand_back(execution)
                    return
            await execution.run()
        except Exception:
            log.exception("run %s: the worker could not record its outcome", execution.run_id)
            await self.hand_back(execution)
        finally:
            if self.active.get(execution.run_id) is execution:
                del self.active[execution.run_id]
                del self._executing[execution.run_id]
            execution.unlink()
            self.kick()

    async def hand_back(self, execution: Execution) -> None:
        """A run whose outcome could not be recorded must not stay held by a live worker:
        release it (retrying while the store recovers) so that it runs again."""
        execution.freeze(signals.LeaseLost())
        for pause in (0.1, 0.5, 1, 2, 5, 10, 30):
            try:
                await self.store.release(execution.lease, execution.executed_seconds(), None)
                return
            except Exception:  # the store may be back in a moment
                await asyncio.sleep(pause)
        log.error("run %s stays held by this worker until it restarts", execution.run_id)

    # --- waits settled from outside (tokens, children) -----------------------------------

    def watch(self, wait: tuple[str, runs.Key], future: asyncio.Future[None]) -> None:
        """A run in memory waits on this journal entry: resolve `future` once settled."""
        self._watched.setdefault(wait, set()).add(future)

    def unwatch(self, wait: tuple[str, runs.Key], future: asyncio.Future[None]) -> None:
        futures = self._watched.get(wait)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._watched[wait]

    async def _check_waits(self) -> None:
        if not self._watched:
            return
        for wait in await self.store.settled_waits(list(self._watched)):
            for future in self._watched.get(wait, ()):
                if not future.done():
                    future.set_result(None)

    # --- liveness ------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        interval = max(self.settings.heartbeat_seconds / 2, 0.01)
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(interval)

    def _heartbeat(self) -> None:
        """Thread: renew the heartbeat while the event loop ticks; a hung loop stops it."""
        every = self.settings.heartbeat_seconds
        while not self._heartbeat_stop.wait(every):
            if time.monotonic() - self._tick > every * 1.5:
                log.warning("the event loop is blocked; not renewing the heartbeat")
                continue
            if self._reregistering:
                continue  # its new identity is not registered yet
            try:
                alive = self.store.heartbeat(self.id)
            except Exception:
                log.exception("heartbeat failed")
                continue
            if not alive:
                self.loop.call_soon_threadsafe(self._declared_dead)

    def _declared_dead(self) -> None:
        """Other workers declared this one dead and may take its runs: stop them all and
        serve on under a new identity."""
        if self._reregistering:
            return
        log.error(
            "worker %s was declared dead or lost its liveness lock; dropping its runs "
            "and re-registering",
            self.id,
        )
        for execution in list(self.active.values()):
            execution.freeze(signals.LeaseLost())
        old, self.id = self.id, new_id("wrk")
        self._reregistering = True
        self.spawn(self._reregister(old))

    async def _reregister(self, old: str) -> None:
        """Register the new identity, retrying while the database is unreachable (a server
        restart, say): claims wait meanwhile, since an unregistered worker may hold nothing."""
        pause = 0.05
        try:
            while not self._stopping:
                try:
                    await self.store.stop_worker(old)  # drops its lock
                    await self._register()
                    return
                except exceptions.StoreError as error:
                    log.warning("registering worker %s failed, retrying: %s", self.id, error)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
        finally:
            self._reregistering = False

    async def _maintenance_loop(self) -> None:
        while not self._stopping:
            try:
                await self._maintain()
            except Exception:
                log.exception("worker maintenance failed")
            await asyncio.sleep(self.settings.poll_seconds)

    async def _maintain(self) -> None:
        if await self.store.reap_workers(self.settings.lease_seconds):
            self.kick()  # their runs are claimable now
        if self.active:
            for run_id in await self.store.cancel_requests(self.id):
                execution = self.active.get(run_id)
                if execution is not None:
                    execution.request_cancel()
            for execution in list(self.active.values()):
                await execution.flush_progress()
        await self._check_waits()

    async def _wakeup_loop(self) -> None:
        wakeup = getattr(self.store, "wakeup", None)
        if wakeup is None:
            return
        while True:
            if await wakeup.wait(3600):
                self.kick()
                # Only a cancel's wake-up makes it look for cancels (at every trigger and
                # every finished run, each worker of a busy fleet would read them).
                if wakeup.take_cancel_asked() and self.active:
                    self.spawn(self._check_cancels())
                if self.active:
                    self.spawn(self._check_waits())

    async def _check_cancels(self) -> None:
        for run_id in await self.store.cancel_requests(self.id):
            execution = self.active.get(run_id)
            if execution is not None:
                execution.request_cancel()

    # --- shutdown ------------------------------------------------------------------------

    async def _shutdown(self, loops: list[asyncio.Task[Any]]) -> None:
        """Stop claiming; let steps in flight finish (up to shutdown_grace_seconds), then
        release every run to other workers."""
        self._stopping = True
        self.kick()
        claiming, others = loops[0], loops[1:]
        # A claim under way commits whatever happens: let it finish and start its runs,
        # so they are released below rather than left to a takeover.
        await asyncio.wait([claiming], timeout=10)
        for task in [*others, claiming]:
            task.cancel()
        for execution in list(self.active.values()):
            execution.shut_down()
        pending = [t for t in self._background if t not in loops]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_seconds)
            for execution in list(self.active.values()):
                execution.freeze(signals.ShuttingDown())
            if still:
                await asyncio.wait(still, timeout=5)
        await self.store.stop_worker(self.id)
