"""Crash recovery with real worker processes (DESIGN §3, §5): SIGKILL mid-step and
mid-sleep, a hung worker, graceful shutdown, crash loops, limits across processes."""

from __future__ import annotations

import signal
import time

import pytest

import perdure

pytestmark = pytest.mark.timeout(90)


# A lease far longer than the tests' bounds: a takeover after SIGKILL can only come from
# the lock that dies with the process.
LONG_LEASE = {"PERDURE_LEASE_SECONDS": "60"}


async def test_sigkill_mid_step_resumes_without_rerunning_completed_steps(cluster):
    first = cluster.worker(**LONG_LEASE)
    run_id = await cluster.trigger("pipeline", {"n": 1})
    await cluster.until(lambda: cluster.count(run_id)["B-start"] == 1, what="B in flight")
    first.kill()
    cluster.release("B")
    cluster.worker(**LONG_LEASE)
    await cluster.until(lambda: _finished(cluster, run_id), what="run completed")

    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.COMPLETED
    assert run.output == {"a": 2, "b": 20, "c": 19}
    assert run.attempts == 1 and run.recoveries == 1  # the same attempt, taken over
    counts = cluster.count(run_id)
    assert counts["A"] == 1  # completed before the kill: never again
    assert counts["B-start"] == 2  # in flight at the kill: ran again (at least once)
    assert counts["B"] == 1 and counts["C"] == 1
    assert [(s.name, s.attempts) for s in await cluster.steps(run_id)] == [
        ("step_a", 1),
        ("step_b", 1),
        ("step_c", 1),
    ]


async def _finished(cluster, run_id: str) -> bool:
    return (await cluster.run(run_id)).status.is_terminal


async def test_sigkill_mid_sleep_keeps_the_deadline(cluster):
    first = cluster.worker(**LONG_LEASE)
    run_id = await cluster.trigger("napper", {"n": 1, "seconds": 2.0})
    await cluster.until(lambda: _has_sleep(cluster, run_id), what="sleep recorded")
    sleep = await _has_sleep(cluster, run_id)
    first.kill()
    time.sleep(0.5)  # downtime part-way through the sleep, as in a crash and restart
    cluster.worker(**LONG_LEASE)
    await cluster.until(lambda: _finished(cluster, run_id), what="run completed")
    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.COMPLETED
    # It woke at the deadline recorded before the kill, not 2 s after the restart.
    assert sleep.wake_at <= run.output["woke"] < sleep.wake_at + 1.5
    assert cluster.count(run_id) == {"A": 1, "C": 1}


async def _has_sleep(cluster, run_id: str):
    for entry in (await cluster.client.runs.trace(run_id)).entries:
        if entry.kind.value == "sleep":
            return entry
    return None


async def test_a_hung_worker_loses_its_run_and_can_record_nothing_after(cluster):
    hung = cluster.worker()
    run_id = await cluster.trigger("pipeline", {"n": 1})
    await cluster.until(lambda: cluster.count(run_id)["B-start"] == 1, what="B in flight")
    hung.signal(signal.SIGSTOP)  # alive (its lock held) but silent: no heartbeat
    try:
        cluster.worker()
        await cluster.until(
            lambda: cluster.count(run_id)["B-start"] == 2,
            timeout=30,
            what="takeover after the lease",
        )
        cluster.release("B")
        await cluster.until(lambda: _finished(cluster, run_id), what="run completed")
        hung.signal(signal.SIGCONT)  # it wakes up and finishes its copy of B...
        # (or, on a loaded machine, first learns that it was declared dead, and drops the
        # run: its heartbeat thread may win that race within 0.2 s of waking)
        await cluster.until(
            lambda: cluster.count(run_id)["B"] == 2 or _dropped_its_runs(cluster),
            what="stale B done, or dropped",
        )
        # ...and tries to record it. Fencing must refuse: give it the time to try (this
        # waits for something that must not happen, so there is no event to wait for).
        time.sleep(0.5)
    finally:
        hung.signal(signal.SIGCONT)
    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.COMPLETED and run.output["b"] == 20
    steps = await cluster.steps(run_id)
    assert [s.name for s in steps] == ["step_a", "step_b", "step_c"]  # recorded once each
    assert cluster.count(run_id)["C"] == 1  # the stale worker never went on past B
    events = [e.to_status for e in (await cluster.client.runs.trace(run_id)).events]
    assert events.count("completed") == 1


def _dropped_its_runs(cluster) -> bool:
    log = cluster.dir / "workers.log"
    return log.exists() and "dropping its runs" in log.read_text()


async def test_sigterm_lets_the_step_in_flight_finish_and_releases_the_run(cluster):
    first = cluster.worker()
    run_id = await cluster.trigger("graceful", {"seconds": 1.0})
    await cluster.until(lambda: cluster.count(run_id)["blocking-start"] == 1, what="step started")
    assert first.terminate(timeout=30) == 0
    counts = cluster.count(run_id)
    assert counts["blocking-end"] == 1  # finished, not interrupted
    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.QUEUED  # released, not lost, not failed
    cluster.worker()
    await cluster.until(lambda: _finished(cluster, run_id), what="run completed")
    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.COMPLETED and run.output == "done/0"
    assert cluster.count(run_id)["blocking-start"] == 1  # recorded before release
    assert run.recoveries == 0  # a release is not a crash


async def test_a_crash_loop_ends_the_run_failed_with_worker_crashed(cluster):
    env = {"PERDURE_MAX_RECOVERIES": "2"}
    run_id = await cluster.trigger("crasher")
    for _ in range(4):  # the first try plus max_recoveries takeovers, plus one more
        process = cluster.worker(**env)
        await cluster.until(
            lambda p=process: p.process.poll() is not None or _finished_sync(cluster, run_id),
            what="crash",
        )
        if _finished_sync(cluster, run_id):
            break
    await cluster.until(lambda: _finished(cluster, run_id), what="run ended")
    run = await cluster.run(run_id)
    assert run.status is perdure.RunStatus.FAILED
    assert run.error.type == "WorkerCrashed"
    assert cluster.count(run_id) == {"A": 1, "die": 3}


def _finished_sync(cluster, run_id: str) -> bool:
    return cluster.client.runs.get_sync(run_id).status.is_terminal


async def test_a_queue_limit_holds_across_worker_processes(cluster):
    # Limit 3, each worker takes 2 at most: reaching 3 needs both processes, and together
    # they could run 4, so the limit is what holds them.
    cluster.worker(PERDURE_WORKER_CONCURRENCY="2")
    cluster.worker(PERDURE_WORKER_CONCURRENCY="2")
    log = cluster.dir / "workers.log"
    await cluster.until(
        lambda: log.exists() and log.read_text().count("serving") == 2, what="both workers up"
    )
    ids = [await cluster.trigger("limited", {"seconds": 0.4}) for _ in range(12)]
    for run_id in ids:
        await cluster.until(lambda r=run_id: _finished(cluster, r), what="all done")
    events = sorted((float(t), name) for name, _, _, t in cluster.effects())
    running = peak = 0
    for _, name in events:
        running += 1 if name == "occupy-start" else -1
        peak = max(peak, running)
    assert peak == 3  # the limit is reached and never exceeded
    assert len({pid for _, _, pid, _ in cluster.effects()}) == 2
