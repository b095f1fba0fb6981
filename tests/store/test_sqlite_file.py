"""SQLite only: the file perdure is pointed at. A file that is not perdure's, or is newer
than this code, is refused with one clear line and left exactly as it was; a new file is
created and migrated, safely even by several processes at once."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

import perdure
from perdure.store import migrations
from perdure.store import sqlite as sqlite_store
from perdure.store.sqlite import SqliteStore
from tests.store import support


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def siblings(path: Path) -> set[str]:
    """The files SQLite may create beside a database."""
    return {p.name for p in path.parent.iterdir() if p != path and p.name.startswith(path.name)}


async def refused(path: Path) -> str:
    """Open the store on `path`, expecting a StoreError; returns its message."""
    store = SqliteStore(url(path))
    try:
        with pytest.raises(perdure.StoreError) as caught:
            await store.open()
    finally:
        await store.close()
    message = str(caught.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


async def test_a_file_that_is_not_sqlite_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = sha256(path)
    message = await refused(path)
    assert str(path) in message
    assert sha256(path) == before
    assert siblings(path) == set()


async def test_a_corrupt_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)
    before = sha256(path)
    await refused(path)
    assert sha256(path) == before
    assert siblings(path) == set()


async def test_someone_elses_sqlite_database_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.close()
    before = sha256(path)
    message = await refused(path)
    assert "customers" in message
    assert sha256(path) == before
    assert siblings(path) == set()  # in particular no -wal: it was not switched to WAL


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "perdure.db"
    path.mkdir()
    await refused(path)
    assert list(path.iterdir()) == []


async def test_a_database_with_a_newer_schema_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "perdure.db"
    store = SqliteStore(url(path))
    await store.open()
    await store.close()
    newer = migrations.LATEST + 1
    conn = sqlite3.connect(path)
    conn.execute("UPDATE perdure_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    conn.commit()
    conn.close()
    before = sha256(path)
    message = await refused(path)
    assert str(newer) in message
    assert sha256(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM perdure_meta").fetchall() == [(str(newer),)]
    conn.close()


async def test_a_database_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "perdure.db"
    message = await refused(path)
    assert "no-such-dir" in message
    assert not path.parent.exists()


async def test_an_empty_file_becomes_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    store = SqliteStore(url(path))
    await store.open()
    try:
        assert await store.migrate() == migrations.LATEST
    finally:
        await store.close()


async def test_a_perdure_database_opens_again_at_the_same_version(tmp_path: Path) -> None:
    path = tmp_path / "perdure.db"
    for _ in range(2):
        store = SqliteStore(url(path))
        await store.open()
        try:
            assert await store.migrate() == migrations.LATEST
        finally:
            await store.close()


# Opens the store once a start file appears, so every process migrates at the same time.
OPENER = """
import asyncio, os, sys, time
from perdure.store.sqlite import SqliteStore

async def main(url, start):
    print("ready", flush=True)
    while not os.path.exists(start):
        time.sleep(0.0005)
    store = SqliteStore(url)
    await store.open()
    print(await store.migrate(), flush=True)
    await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_processes_that_create_one_database_at_once_all_end_on_the_latest_schema(
    tmp_path: Path,
) -> None:
    for round in range(3):
        path = tmp_path / f"race-{round}.db"
        start = tmp_path / f"start-{round}"
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                OPENER,
                url(path),
                str(start),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(4)
        ]
        async with asyncio.timeout(60):
            for proc in procs:
                assert proc.stdout is not None
                assert (await proc.stdout.readline()).strip() == b"ready"
            start.touch()
            outcomes = [await proc.communicate() for proc in procs]
        for proc, (out, err) in zip(procs, outcomes, strict=True):
            assert proc.returncode == 0, err.decode()
            assert out.strip() == str(migrations.LATEST).encode()
        store = SqliteStore(url(path))
        await store.open()
        try:
            assert await store.migrate() == migrations.LATEST
        finally:
            await store.close()


async def test_claiming_reads_only_due_runs_never_finished_or_parked_ones(tmp_path):
    import json
    import time

    from perdure.store import sql

    store = SqliteStore(f"sqlite:///{tmp_path / 'plan.db'}")
    await store.open()
    await store.close()
    params = {"task_ids": json.dumps(["task-a"]), "version": None, "now": time.time(), "limit": 9}
    with sqlite3.connect(tmp_path / "plan.db") as db:
        for query, index in (
            (sql.QUEUED_RUNS, "runs_queued"),
            (sql.DUE_RUNS, "runs_woken (due_at"),
            (sql.LIMITED_CLAIMABLE_RUNS, "runs_due (due_at"),
            (sql.NEXT_DUE, "runs_due (due_at"),
            (sql.ORPHANED_RUNS, "runs_by_worker"),
        ):
            params = {**params, "worker_id": "wrk"}
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query, params)]
            assert any(index in step for step in plan), plan
            assert not any("runs_task" in step for step in plan), plan
        # Queued runs come from their index in the order they are taken: no sort of the
        # backlog at every claim.
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql.QUEUED_RUNS, params)]
        assert not any("TEMP B-TREE" in step for step in plan), plan


# --- where writes are made -------------------------------------------------------------------


async def test_a_lone_write_is_made_at_once_on_the_callers_thread(tmp_path: Path) -> None:
    """No thread hand-off for a write with nothing to share a commit with (a run's steps
    one after another): its cost is its own statements and commit."""
    store = SqliteStore(url(tmp_path / "db.sqlite"))
    await store.open()
    try:
        made_on = await store._write_op(lambda tx: threading.get_ident())
        assert made_on == threading.get_ident()
    finally:
        await store.close()


async def test_writes_made_at_once_share_a_commit_on_the_stores_thread(tmp_path: Path) -> None:
    store = SqliteStore(url(tmp_path / "db.sqlite"))
    await store.open()
    try:
        made = await asyncio.gather(
            *[store._write_op(lambda tx: (threading.get_ident(), id(tx))) for _ in range(20)]
        )
        assert threading.get_ident() not in {thread for thread, _ in made}
        assert len({tx for _, tx in made}) < 20  # transactions shared by several writes
    finally:
        await store.close()


async def test_a_write_waiting_for_another_process_lets_the_event_loop_run(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(url(path))
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        write = asyncio.ensure_future(store.probe_write())
        for _ in range(10):
            await asyncio.sleep(0.01)  # the loop turns while the write waits
        assert not write.done()
        other.execute("COMMIT")
        await asyncio.wait_for(write, timeout=10)
    finally:
        other.close()
        await store.close()


async def test_the_wal_is_checkpointed_when_every_write_is_made_at_once(tmp_path: Path) -> None:
    """SQLite's own checkpoint is off (it would copy the WAL into the database on the
    event loop's thread); the store's thread checkpoints instead, so the WAL stays small."""
    path = tmp_path / "db.sqlite"
    store = SqliteStore(url(path))
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)

    def frames() -> int:  # in the WAL since it last started over (checkpointing it)
        return int(other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    try:
        every = sqlite_store.CHECKPOINT_EVERY
        for _ in range(every // 2):
            await store.create_run(support.new_run())
        half_round = frames()
        for _ in range(4 * every):
            await store.create_run(support.new_run())
        assert frames() < 4 * half_round  # 8 half rounds' worth without checkpoints
    finally:
        other.close()
        await store.close()
