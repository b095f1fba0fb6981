"""A worker's PostgreSQL connections (DESIGN §5): a small fixed number whatever its
concurrency, and a worker that loses them stops what it can no longer heartbeat."""

from __future__ import annotations

import pytest

import perdure
from perdure.store import postgres as pg_store
from tests import postgres

pytestmark = pytest.mark.timeout(90)

LONG_LEASE = {"PERDURE_LEASE_SECONDS": "60"}


@pytest.fixture
def database_url() -> str:
    return postgres.fresh_url()


def _connections(url: str, pid: int, role: str = "%") -> list[str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"perdure {role} {pid}",),
        ).fetchall()
    return [row[0] for row in rows]


def _terminate(url: str, pid: int) -> int:
    """Cut every connection of that process, as a network failure would."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"perdure % {pid}",),
        ).fetchall()
    return len(rows)


async def test_a_worker_keeps_a_few_connections_whatever_its_concurrency(cluster, database_url):
    worker = cluster.worker(PERDURE_WORKER_CONCURRENCY="60")
    run_ids = [await cluster.trigger("pipeline", {"n": n}) for n in range(60)]
    await cluster.until(
        lambda: cluster.count()["B-start"] == 60, timeout=30, what="60 runs in flight at once"
    )
    held = _connections(database_url, worker.pid)
    # writes, the read pool, LISTEN, and the liveness lock of its one worker
    budget = 1 + pg_store.READ_CONNECTIONS + 1 + 1
    assert 3 <= len(held) <= budget, held
    assert any(name.startswith("perdure liveness") for name in held)
    cluster.release("B")
    for run_id in run_ids:
        await cluster.until(lambda r=run_id: _completed(cluster, r), what=f"{run_id} done")
    assert len(_connections(database_url, worker.pid)) <= budget


async def test_a_worker_cut_off_from_the_database_stops_its_runs_and_comes_back(
    cluster, database_url
):
    cut = cluster.worker(**LONG_LEASE)
    run_id = await cluster.trigger("pipeline", {"n": 1})
    await cluster.until(lambda: cluster.count(run_id)["B-start"] == 1, what="B in flight")
    assert _terminate(database_url, cut.pid) >= 3
    # Its liveness lock died with its session: another worker takes the run over at once
    # (the 60 s lease plays no part), while the cut-off worker stops its copy of B.
    cluster.worker(**LONG_LEASE)
    await cluster.until(lambda: cluster.count(run_id)["B-start"] == 2, timeout=30, what="takeover")
    cluster.release("B")
    await cluster.until(lambda: _completed(cluster, run_id), what="run completed")
    run = await cluster.run(run_id)
    assert run.output == {"a": 2, "b": 20, "c": 19}
    assert cluster.count(run_id)["B"] == 1  # the cut-off copy never finished
    # The cut-off worker reconnected and registered again: it still serves.
    await cluster.until(
        lambda: len(_connections(database_url, cut.pid, "liveness %")) == 1,
        timeout=30,
        what="the cut-off worker registered again",
    )
    assert cut.process is not None and cut.process.poll() is None


async def _completed(cluster, run_id: str) -> bool:
    return (await cluster.run(run_id)).status is perdure.RunStatus.COMPLETED
