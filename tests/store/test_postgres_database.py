"""PostgreSQL databases perdure must not use, and migrations from several processes at
once (the SQLite counterparts are in test_sqlite_file.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import perdure
from perdure.store import base, migrations
from perdure.store.postgres import PostgresStore
from tests import postgres


def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


async def test_a_foreign_database_is_refused_and_left_unchanged():
    url = postgres.fresh_url()
    _sql(url, "CREATE TABLE invoices (id int)")
    with pytest.raises(perdure.StoreError, match="not perdure's") as refused:
        await PostgresStore(url).open()
    assert "\n" not in str(refused.value)
    assert _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()") == [
        ("invoices",)
    ]


async def test_a_database_newer_than_this_code_is_refused_and_left_unchanged():
    url = postgres.fresh_url()
    store = PostgresStore(url)
    await store.open()
    await store.close()
    _sql(url, "UPDATE perdure_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(perdure.StoreError, match="newer than this perdure"):
        await PostgresStore(url).open()
    assert _sql(url, "SELECT value FROM perdure_meta WHERE key = 'schema_version'") == [("99",)]


async def test_processes_that_migrate_one_database_at_once_all_succeed():
    url = postgres.fresh_url()
    script = (
        "import asyncio, sys\n"
        "from perdure.store.postgres import PostgresStore\n"
        "async def main():\n"
        "    s = PostgresStore(sys.argv[1]); await s.open(); print(await s.migrate())\n"
        "asyncio.run(main())\n"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, url, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    assert {out.decode().strip() for out, _ in outputs} == {str(migrations.LATEST)}


async def test_a_claim_skips_the_runs_another_claim_holds_instead_of_waiting():
    import psycopg

    from tests.store import support

    url = postgres.fresh_url()
    store = PostgresStore(url)
    await store.open()
    try:
        await store.register_worker(support.worker_info("wrk_a"))
        first, second = support.new_run(priority=1), support.new_run()
        for new in (first, second):
            await store.create_run(new)
        # Another worker's claim, still in its transaction, holds the first run.
        with psycopg.connect(url) as other:
            other.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (first.id,))
            async with asyncio.timeout(5):
                claims = await store.claim("wrk_a", [support.TASK], None, 10, 5)
            assert [c.lease.run_id for c in claims] == [second.id]
            other.rollback()
        claims = await store.claim("wrk_a", [support.TASK], None, 10, 5)
        assert [c.lease.run_id for c in claims] == [first.id]
    finally:
        await store.close()


async def test_statements_run_often_are_prepared_on_the_server():
    from tests.store import support

    store = PostgresStore(postgres.fresh_url())
    await store.open()
    try:
        for _ in range(5):
            await store.create_run(support.new_run())
        prepared = await store._write_op(  # the connection the writes went through
            lambda tx: tx.rows("SELECT statement FROM pg_prepared_statements", {})
        )
        assert any("INSERT INTO runs" in row["statement"] for row in prepared), prepared
    finally:
        await store.close()


async def test_a_checkpoint_is_one_round_trip_and_answers_once_committed(
    tmp_path,
):
    """Pipeline mode: BEGIN, the fenced upsert and COMMIT travel together; the caller hears
    back only once COMMIT is answered (the entry is then visible to any other connection)."""
    from tests.store import support

    async with _store_and_worker() as (url, store, worker):
        await store.create_run(support.new_run())
        lease = (await worker.claim_one()).lease
        with _round_trips(store, tmp_path) as trips:
            for seq in range(1, 4):
                assert await store.checkpoint(lease, [support.entry("0", seq)])
                found = _sql(url, f"SELECT seq FROM journal WHERE seq = {seq}")
                assert found == [(seq,)], f"checkpoint {seq} answered before it committed"
        # Three checkpoints, each BEGIN, its fenced upsert and COMMIT in one round trip.
        assert [trip.count("Execute") for trip in trips] == [3] * 3, trips


async def test_a_trigger_is_one_round_trip_and_a_claim_two(tmp_path):
    """A trigger sends its run, its event and the notification with BEGIN and COMMIT; a
    claim asks for all it must know at once, then takes the run and reads its journal with
    COMMIT (the clock is read by the server: never a round trip of its own)."""
    from tests.store import support

    async with _store_and_worker() as (_, store, worker):
        new = support.new_run()
        with _round_trips(store, tmp_path) as trips:
            await store.create_run(new)
        assert len(trips) == 1, trips
        # BEGIN, the run and its event in one statement, NOTIFY, COMMIT.
        assert trips[0].count("Execute") == 4, trips
        with _round_trips(store, tmp_path) as trips:
            claim = await worker.claim_one()
        assert claim.lease.run_id == new.id
        assert len(trips) == 2, trips


async def test_a_claim_of_many_runs_is_a_few_statements_whatever_their_number(tmp_path):
    """A claim asks all it must know first in one statement, and writes the leases and
    events of the runs it takes in one more, however many; each run is taken with its own
    lease and event."""
    from perdure.runs import RunStatus
    from tests.store import support

    async with _store_and_worker() as (_, store, worker):
        made = [support.new_run() for _ in range(3)]
        for new in made:
            await store.create_run(new)
        with _round_trips(store, tmp_path) as trips:
            claims = await worker.claim(limit=3)
        assert sorted(c.lease.run_id for c in claims) == sorted(new.id for new in made)
        assert len({c.lease.token for c in claims}) == 3
        assert len(trips) == 2, trips
        # BEGIN, SET LOCAL and the reads (one statement); the leases, the journals, COMMIT.
        assert [trip.count("Execute") for trip in trips] == [3, 3], trips
        for claim in claims:
            run = await store.get_run(claim.lease.run_id)
            assert run is not None and (run.status, run.attempts) == (RunStatus.RUNNING, 1)
            events = await store.events(claim.lease.run_id)
            assert [(e.from_status, e.to_status, e.worker_id) for e in events] == [
                (None, "queued", None),
                ("queued", "running", worker.id),
            ]
            assert await store.checkpoint(claim.lease, [support.entry("0", 1)])


async def test_finishes_committed_together_read_their_runs_in_one_round_trip(tmp_path):
    """A transition locks its run, updates it and records its event in one statement; a
    batch of them sends every one before reading any answer: two round trips for the
    batch (the statements, then COMMIT), not one more per run."""
    from perdure.runs import RunStatus
    from tests.store import support

    async with _store_and_worker() as (_, store, worker):
        for _ in range(3):
            await store.create_run(support.new_run())
        leases = [claim.lease for claim in await worker.claim(limit=3)]
        assert len(leases) == 3
        with _round_trips(store, tmp_path) as trips:
            outcomes = await support.one_batch(
                store,
                *[
                    functools.partial(
                        store.finish, lease, RunStatus.COMPLETED, str(i), None, [], None
                    )
                    for i, lease in enumerate(leases)
                ],
            )
        assert outcomes == [True] * 3
        assert len(trips) == 2, trips
        assert trips[0].count("Execute") == 4, trips  # BEGIN and the three transitions
        for i, lease in enumerate(leases):
            run = await store.get_run(lease.run_id)
            assert run is not None and (run.status, run.output) == (RunStatus.COMPLETED, i)
            last = (await store.events(lease.run_id))[-1]
            assert (last.from_status, last.to_status, last.worker_id) == (
                "running",
                "completed",
                worker.id,
            )


async def test_checkpoints_committed_together_are_one_statement(tmp_path):
    """The entries of a batch's checkpoints, whatever their runs, go as one statement: a
    statement costs the worker's one thread tens of microseconds, a batch of W2 holds
    dozens of checkpoints. Another write between them keeps its place in the order."""
    from perdure.runs import RunStatus
    from tests.store import support

    async with _store_and_worker() as (_, store, worker):
        for _ in range(4):
            await store.create_run(support.new_run())
        leases = [claim.lease for claim in await worker.claim(limit=4)]
        assert len(leases) == 4
        with _round_trips(store, tmp_path) as trips:
            outcomes = await support.one_batch(
                store,
                *[
                    functools.partial(store.checkpoint, lease, [support.entry("0", 1)])
                    for lease in leases[:3]
                ],
            )
        assert outcomes == [True] * 3
        assert len(trips) == 1, trips
        assert trips[0].count("Execute") == 3, trips  # BEGIN, the entries, COMMIT
        with _round_trips(store, tmp_path) as trips:
            outcomes = await support.one_batch(
                store,
                functools.partial(store.checkpoint, leases[0], [support.entry("0", 2)]),
                functools.partial(
                    store.finish, leases[1], RunStatus.COMPLETED, "1", None, [], None
                ),
                functools.partial(store.checkpoint, leases[1], [support.entry("0", 2)]),
                functools.partial(store.checkpoint, leases[2], [support.entry("0", 2)]),
            )
        # The finish ends the second lease before its checkpoint comes: refused.
        assert outcomes == [True, True, False, True]
        # BEGIN, the first entry, the finish, the two entries after it, COMMIT.
        assert sum(trip.count("Execute") for trip in trips) == 5, trips
        for lease, seqs in zip(leases, [[1, 2], [1], [1, 2]], strict=False):
            assert [e.key.seq for e in await store.journal(lease.run_id)] == seqs


async def test_a_claim_reads_journals_by_index_on_a_table_never_analyzed():
    """A young database has no statistics yet: the claim's journal read must still look
    each run up by index, not read every entry of every run (1.7 ms a claim at 6,000)."""
    from perdure.store import pg_sql

    url = postgres.fresh_url()
    store = PostgresStore(url)
    await store.open()
    await store.close()
    _sql(
        url,
        "INSERT INTO runs (id, task_id, queue, status, payload, tags, root_id, created_at, "
        "due_at) SELECT 'run_' || g, 't', 'default', 'completed', '{}', '[]', 'run_' || g, "
        "0, 0 FROM generate_series(1, 2000) AS g",
    )
    _sql(
        url,
        "INSERT INTO journal (run_id, branch, seq, sub, kind, name, status, attempts, attempt) "
        "SELECT 'run_' || (g / 3), '0', g, '', 'step', 's', 'completed', 1, 1 "
        "FROM generate_series(3, 6002) AS g",
    )
    query = pg_sql.Q.JOURNALS_OF.replace("%(run_ids)s", '\'["run_1", "run_2"]\'')
    plan = "\n".join(str(row[0]) for row in _sql(url, f"EXPLAIN {query}"))
    assert "Seq Scan on journal" not in plan, plan
    assert "journal_key" in plan, plan


@contextlib.asynccontextmanager
async def _store_and_worker() -> AsyncIterator[tuple[str, PostgresStore, Any]]:
    """A fresh database's URL, a store open on it and a registered worker of it."""
    from tests.store import support

    url = postgres.fresh_url()
    store = PostgresStore(url)
    await store.open()
    try:
        await store.register_worker(support.worker_info("wrk_trace"))
        yield url, store, support.Worker(id="wrk_trace", store=store)
    finally:
        await store.close()


@contextlib.contextmanager
def _round_trips(store: PostgresStore, tmp_path) -> Iterator[list[list[str]]]:
    """What the store's write connection sends meanwhile, split where it waited for the
    server: the round trips that carried statements (Execute or Query)."""
    from psycopg import pq

    trips: list[list[str]] = []
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as out:
        store._conn.pgconn.trace(out.fileno())
        store._conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield trips
        finally:
            store._conn.pgconn.untrace()
    sent: list[list[str]] = [[]]
    for line in trace.read_text().splitlines():
        if line.startswith("F\t"):
            sent[-1].append(line.split("\t")[2])
        elif line.startswith("B\t") and sent[-1]:
            sent.append([])
    trips.extend(trip for trip in sent if "Execute" in trip or "Query" in trip)


async def test_a_notification_says_whether_a_cancel_was_asked_for():
    """NOTIFY carries its kind: a worker reads cancel requests only after a cancel's."""
    from tests.store import support

    url = postgres.fresh_url()
    worker_store, client = PostgresStore(url), PostgresStore(url)
    await worker_store.open()
    await client.open()
    try:
        await worker_store.register_worker(support.worker_info("wrk_kinds"))
        wakeup = worker_store.wakeup
        await wakeup.wait(0)  # binds the event to this loop
        await client.create_run(support.new_run())
        assert await wakeup.wait(5)
        assert not wakeup.take_cancel_asked()
        run = support.new_run()
        await client.create_run(run)
        await client.cancel_run(run.id)
        for _ in range(2):  # the create's wake-up, then the cancel's (or both at once)
            if wakeup.cancel_asked:
                break
            assert await wakeup.wait(5)
        assert wakeup.take_cancel_asked()
    finally:
        await client.close()
        await worker_store.close()


async def test_reads_do_not_queue_behind_a_write_that_waits():
    import psycopg

    from tests.store import support

    url = postgres.fresh_url()
    store = PostgresStore(url)
    await store.open()
    try:
        first = support.new_run()
        await store.create_run(first)
        with psycopg.connect(url) as other:
            other.execute("LOCK TABLE runs IN EXCLUSIVE MODE")  # writes wait; reads do not
            blocked = asyncio.ensure_future(store.create_run(support.new_run()))
            async with asyncio.timeout(5):
                run = await store.get_run(first.id)
                listed = await store.list_runs(base.RunFilter())
            assert run is not None and [r.id for r in listed] == [first.id]
            assert not blocked.done()
            other.rollback()
        async with asyncio.timeout(5):
            await blocked
    finally:
        await store.close()


async def test_without_a_server_the_tests_start_a_throwaway_cluster_and_remove_it():
    if postgres.binaries() is None:
        pytest.skip("PostgreSQL's binaries are not installed here")
    nobody = "postgresql://postgres@127.0.0.1:1/test"  # no server listens on port 1
    url, throwaway = postgres.server_for(nobody, chosen=False)
    assert throwaway is not None
    try:
        store = PostgresStore(url)
        await store.open()
        try:
            from tests.store import support

            run_id, _ = await store.create_run(support.new_run())
            assert (await store.get_run(run_id)) is not None
        finally:
            await store.close()
    finally:
        throwaway.stop()
    assert not throwaway.dir.exists()
    # A URL the user chose is theirs: never replaced by a throwaway cluster.
    assert postgres.server_for(nobody, chosen=True) == (nobody, None)


async def test_claiming_never_reads_the_runs_parked_until_later():
    import json
    import time

    import psycopg

    from perdure.store import pg_sql

    url = await _store_with_runs("waiting", "+ 600")  # parked for ten minutes
    with psycopg.connect(url, autocommit=True) as conn:
        params = {
            "task_ids": json.dumps(["task-a"]),
            "version": None,
            "now": time.time(),
            "worker_id": "wrk",
            "limit": 10,
            "scan": 40,
        }
        plans = {}
        for query in ("QUEUED_RUNS", "DUE_RUNS", "LIMITED_CLAIMABLE_RUNS"):
            if query == "LIMITED_CLAIMABLE_RUNS":
                conn.execute("INSERT INTO queues (name, concurrency_limit) VALUES ('queue-a', 5)")
            with conn.transaction():
                explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + getattr(pg_sql.Q, query)
                plans[query] = conn.execute(explain, params).fetchone()[0][0]["Plan"]
    # Pages read, not time: a claim that walked the parked runs' index would read well
    # over a hundred pages of it.
    for query, plan in plans.items():
        pages = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
        assert pages < 40, f"{query} read {pages} pages with 20,000 runs parked"


async def test_a_claim_takes_queued_runs_without_reading_the_backlog():
    """20,000 queued runs: a claim takes its ten from the index that holds them in the
    order they are taken, never sorting the backlog."""
    import json

    import psycopg

    from perdure.store import pg_sql

    url = await _store_with_runs("queued", "- g")  # the g-th queued g seconds ago
    with psycopg.connect(url, autocommit=True) as conn:
        params = {"task_ids": json.dumps(["task-a"]), "version": None, "limit": 10}
        plans = {}
        for query in ("QUEUED_RUNS", "DUE_RUNS"):  # neither walks the queued backlog
            with conn.transaction():
                explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + getattr(pg_sql.Q, query)
                plans[query] = conn.execute(explain, params).fetchone()[0][0]["Plan"]
        with conn.transaction():
            taken = conn.execute(pg_sql.Q.QUEUED_RUNS, params).fetchall()
    for query, plan in plans.items():
        pages = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
        assert pages < 40, f"{query} read {pages} pages with 20,000 runs queued"
    # The first ten by priority, then due time (the earliest first).
    assert [row[0] for row in taken] == [f"queued{g}" for g in range(20000, 19970, -3)]


async def _store_with_runs(status: str, due: str) -> str:
    """A fresh store holding 20,000 runs of task-a in `status` (ids `status` || g, priority
    g % 3), due at now `due` (SQL over g); its URL."""
    import psycopg

    url = postgres.fresh_url()
    store = PostgresStore(url)
    await store.open()
    await store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO runs (id, task_id, queue, payload, root_id, status, due_at,
                created_at, priority, tags, attempts, next_attempt, recoveries,
                executed_seconds, metadata)
            SELECT '{status}' || g, 'task-a', 'queue-a', '{{}}', '{status}' || g, '{status}',
                extract(epoch FROM now()) {due}, extract(epoch FROM now()), g % 3, '[]', 0, 1,
                0, 0, '{{}}'
            FROM generate_series(1, 20000) g"""
        )
        conn.execute("ANALYZE runs")
    return url
