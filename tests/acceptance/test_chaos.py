"""Chaos on PostgreSQL (DESIGN §5-§6): four workers, 500 runs mixing steps, sleeps and
child runs on a queue with a concurrency limit; a random worker SIGKILLed every second and
restarted; PostgreSQL restarted once mid-run. Checked at the end, from the side-effect
file and the database: every run completed once; no step body ran again unless it was in
flight at a kill; the queue's limit was never exceeded."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict

import pytest

import perdure
from perdure.store import base
from tests import postgres
from tests.acceptance.conftest import Cluster

pytestmark = pytest.mark.timeout(300)
RUNS, WORKERS, LIMIT = 500, 4, 8


@pytest.fixture
def pg_cluster(tmp_path):
    with postgres.restartable() as (url, restart):
        cluster = Cluster(tmp_path, url)
        try:
            yield cluster, restart
        finally:
            cluster.stop()


async def test_chaos_every_run_completes_once_with_no_double_work(pg_cluster):
    cluster, restart_server = pg_cluster
    # A lease far past any stall of an overloaded machine: a worker loses its runs only to
    # the faults below (a kill, or the restart that ends its liveness session).
    env = {
        "PERDURE_WORKER_CONCURRENCY": "20",
        "PERDURE_LEASE_SECONDS": "15",
        "PERDURE_HEARTBEAT_SECONDS": "0.5",
    }
    workers = [cluster.worker(**env) for _ in range(WORKERS)]
    ids = [await cluster.trigger("chaos", {"n": i}) for i in range(RUNS)]
    store = await cluster.client.store()
    kills: dict[str, float] = {}  # pid -> when it was killed
    rng = random.Random(7157)
    restarted = False
    restart = (0.0, 0.0)
    deadline = time.monotonic() + 240
    while True:
        done = await _completed(store)
        if done >= RUNS + RUNS // 4:  # parents and children
            break
        assert time.monotonic() < deadline, f"only {done} runs completed"
        if not restarted and done >= RUNS // 3:
            began = time.time()
            restart_server()
            restart = (began, time.time() + 5.0)  # and the few seconds of reconnecting
            restarted = True
        victim = rng.randrange(WORKERS)
        workers[victim].kill()  # returns once the process is gone
        kills[str(workers[victim].pid)] = time.time()
        workers[victim] = cluster.worker(**env)
        await asyncio.sleep(1.0)
    assert restarted

    runs = await store.list_runs(base.RunFilter(limit=10_000))
    assert len(runs) == RUNS + RUNS // 4
    assert all(r.status is perdure.RunStatus.COMPLETED for r in runs)
    for run_id in ids[:50]:  # every completion happened once
        events = [e.to_status for e in await store.events(run_id)]
        assert events.count("completed") == 1
    outputs = {r.id: r.output for r in runs if r.task_id == "chaos"}
    assert sorted(outputs[i] for i in ids) == sorted(
        (n + 2 + (1 if n % 4 == 0 else 0)) for n in range(RUNS)
    )

    effects = cluster.effects()
    _check_no_double_work(effects, kills, restart, _deaths(cluster.env["PERDURE_DATABASE_URL"]))
    _check_limit(effects, kills, restart)


async def _completed(store) -> int:
    try:
        found = await store.list_runs(base.RunFilter(status=["completed"], limit=10_000))
    except perdure.StoreError:
        return 0  # the server is restarting: this client's call fails, the next one works
    return len(found)


Execution = tuple[float, str, float | None, bool]  # start, pid, stop (None: killed), finished


def _executions(effects: list[list[str]]) -> dict[tuple[str, str], list[Execution]]:
    """(run, step) -> its executions in order. A body stops at its end, at a cut (its run
    was frozen), or, with no line at all, at its process's kill."""
    found: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    open_: dict[tuple[str, str, str], float] = {}
    for name, run_id, pid, at in effects:
        step, _, edge = name.rpartition("-")
        if edge == "start":
            if (run_id, step, pid) in open_:  # started again in the same process
                found[(run_id, step)].append((open_.pop((run_id, step, pid)), pid, None, False))
            open_[(run_id, step, pid)] = float(at)
        else:
            started = open_.pop((run_id, step, pid))
            found[(run_id, step)].append((started, pid, float(at), edge == "end"))
    for (run_id, step, pid), started in open_.items():
        found[(run_id, step)].append((started, pid, None, False))
    return {key: sorted(runs) for key, runs in found.items()}


def _deaths(url: str) -> dict[str, list[float]]:
    """pid -> when its workers were declared dead (for a failure's message)."""
    import psycopg

    found: dict[str, list[float]] = defaultdict(list)
    with psycopg.connect(url) as conn:
        for pid, dead_at in conn.execute("SELECT pid, dead_at FROM workers WHERE dead_at > 0"):
            found[str(pid)].append(dead_at)
    return found


def _check_no_double_work(
    effects: list[list[str]],
    kills: dict[str, float],
    restart: tuple[float, float],
    deaths: dict[str, list[float]],
) -> None:
    """A step body ran again only where every earlier run of it was cut off by a fault:
    its process was killed after it started (before the result was recorded), or it ran
    across the PostgreSQL restart (which ends every session, liveness locks included)."""
    for (run_id, step), executions in _executions(effects).items():
        assert any(finished for *_, finished in executions), f"{step} of {run_id}"
        *earlier, _ = executions
        for started, pid, ended, _ in earlier:
            killed = pid in kills and kills[pid] >= started
            across_restart = started <= restart[1] and (ended is None or ended >= restart[0])
            assert killed or across_restart, (
                f"{step} of {run_id} ran again after a run in {pid} that no fault cut off: "
                f"executions {executions}, restart {restart}, kill {kills.get(pid)}, "
                f"declared dead at {deaths.get(pid)}"
            )


def _check_limit(
    effects: list[list[str]], kills: dict[str, float], restart: tuple[float, float]
) -> None:
    """Runs of the queue executing step bodies never overlapped more than its limit. A
    body cut short counts until the kill (or the restart) that cut it; a run counts once
    while a stale holder's body and its new holder's overlap (one run, one slot)."""
    by_run: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (run_id, _), executions in _executions(effects).items():
        for started, pid, ended, _ in executions:
            if ended is None:
                ended = kills.get(pid, restart[1])
            by_run[run_id].append((started, ended))
    edges = []
    for intervals in by_run.values():
        merged: list[list[float]] = []
        for started, ended in sorted(intervals):
            if merged and started <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], ended)
            else:
                merged.append([started, ended])
        edges += [(s, e) for s, e in merged]
    points = sorted([(s, 1) for s, _ in edges] + [(e, -1) for _, e in edges])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak <= LIMIT, f"{peak} step bodies ran at once on a queue limited to {LIMIT}"
