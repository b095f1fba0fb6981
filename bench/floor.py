"""The floors: what the machine and the database cost before any system's code.

W0: a loop of INSERT + COMMIT of a ~200-byte row on one connection. What one durable write
costs on this machine at each durability level the systems use: SQLite WAL+FULL (perdure's
default), WAL+NORMAL, rollback journal+FULL (DBOS's SQLite mode: SQLite's defaults);
PostgreSQL with synchronous_commit on (the default) and off.

W3's bare path: W3's shape (an idle pause, a trigger, the wake-up of an idle process that
takes the new row) written by hand against the database, with perdure's mechanisms and
durability levels and nothing else. On SQLite the trigger commits its row (WAL+FULL) and
sends a datagram to the taker, which takes the row in a transaction of its own (WAL+NORMAL,
as a claim); on PostgreSQL the trigger is one statement that inserts and notifies, and
the taker LISTENs and takes the row with one UPDATE (synchronous_commit off, as a claim).
Measured from before the trigger to the moment the taker holds the row: the latency no
code of a system's own adds to.
"""

from __future__ import annotations

import multiprocessing
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench import common

ROW = "x" * 200

SQLITE_MODES = {
    "WAL+FULL": ("WAL", "FULL"),
    "WAL+NORMAL": ("WAL", "NORMAL"),
    "rollback+FULL": ("DELETE", "FULL"),
}
POSTGRES_MODES = {"sync on": "on", "sync off": "off"}


def sqlite_floor(directory: Path, journal: str, synchronous: str, commits: int) -> float:
    """µs per commit."""
    path = directory / f"floor-{journal}-{synchronous}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA journal_mode={journal}")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        return _loop(conn, "INSERT INTO t (payload) VALUES (?)", commits)
    finally:
        conn.close()


def postgres_floor(url: str, synchronous_commit: str, commits: int) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET synchronous_commit = {synchronous_commit}")
        conn.execute("DROP TABLE IF EXISTS floor")
        conn.execute("CREATE TABLE floor (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)")
        return _loop(conn, "INSERT INTO floor (payload) VALUES (%s)", commits)


def _loop(conn: Any, insert: str, commits: int) -> float:
    for _ in range(min(50, commits)):  # warm the file, the cache, the statement
        _commit(conn, insert)
    start = time.perf_counter()
    for _ in range(commits):
        _commit(conn, insert)
    return 1e6 * (time.perf_counter() - start) / commits


def _commit(conn: Any, insert: str) -> None:
    conn.execute("BEGIN")
    conn.execute(insert, (ROW,))
    conn.execute("COMMIT")


def w0(job: Any) -> dict[str, Any]:
    commits = int(job.params["commits"])
    if job.backend == "sqlite":
        found = {
            label: sqlite_floor(job.dir, journal, sync, commits)
            for label, (journal, sync) in SQLITE_MODES.items()
        }
        return {"us_per_commit": found, "commits": commits, "sqlite": sqlite3.sqlite_version}
    found = {label: postgres_floor(job.url, value, commits) for label, value in POSTGRES_MODES.items()}
    return {"us_per_commit": found, "commits": commits}


# --- W3's bare path ----------------------------------------------------------------------

TAKE_SQLITE = "SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT 10"
TAKE_POSTGRES = """UPDATE floor_runs SET status = 'running' WHERE id IN (
    SELECT id FROM floor_runs WHERE status = 'queued' ORDER BY id LIMIT 10
    FOR UPDATE SKIP LOCKED) RETURNING id"""


def _sqlite_taker(path: str, address: str, ready: Any, replies: Any) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    ready.send(True)
    while sock.recv(64) != b"stop":
        conn.execute("BEGIN IMMEDIATE")
        taken = [row[0] for row in conn.execute(TAKE_SQLITE)]
        conn.executemany("UPDATE runs SET status = 'running' WHERE id = ?", [(i,) for i in taken])
        conn.execute("COMMIT")
        replies.send((time.time(), taken))
    conn.close()


def _postgres_taker(url: str, ready: Any, replies: Any) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("LISTEN floor_work")
        ready.send(True)
        while True:
            notes = list(conn.notifies(stop_after=1))  # blocks until one comes
            if any(note.payload == "stop" for note in notes):
                break
            taken = [row[0] for row in conn.execute(TAKE_POSTGRES)]
            replies.send((time.time(), taken))


def w3(job: Any) -> dict[str, Any]:
    n = int(job.params["runs"])
    context = multiprocessing.get_context("spawn")
    ready, ready_end = context.Pipe()
    replies, replies_end = context.Pipe()
    if job.backend == "sqlite":
        path, address = str(job.dir / "floor-w3.db"), str(job.dir / "taker.sock")
        conn: Any = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT, payload TEXT)")
        taker = context.Process(target=_sqlite_taker, args=(path, address, ready_end, replies_end))
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

        def trigger() -> Any:
            conn.execute("BEGIN IMMEDIATE")
            found = conn.execute("INSERT INTO runs (status, payload) VALUES ('queued', ?)", (ROW,))
            conn.execute("COMMIT")
            sender.sendto(b"!", address)
            return found.lastrowid

        def stop() -> None:
            sender.sendto(b"stop", address)
    else:
        import psycopg

        conn = psycopg.connect(job.url, autocommit=True)
        conn.execute("CREATE TABLE floor_runs (id BIGSERIAL PRIMARY KEY, status TEXT, payload TEXT)")
        taker = context.Process(target=_postgres_taker, args=(job.url, ready_end, replies_end))
        insert = """WITH run AS (INSERT INTO floor_runs (status, payload) VALUES ('queued', %s)
            RETURNING id) SELECT id, pg_notify('floor_work', '') FROM run"""

        def trigger() -> Any:
            return conn.execute(insert, (ROW,)).fetchone()[0]

        def stop() -> None:
            conn.execute("NOTIFY floor_work, 'stop'")
    taker.start()
    latencies = []
    try:
        if not ready.poll(30):
            raise RuntimeError("the taker did not start")
        ready.recv()
        for _ in range(n):
            time.sleep(common.gap_seconds(job.params))  # the same pause as W3's
            before = time.time()
            run_id = trigger()
            if not replies.poll(10):
                raise RuntimeError("the taker did not take the row")
            taken_at, taken = replies.recv()
            assert taken == [run_id], (taken, run_id)
            latencies.append(taken_at - before)
        stop()
        taker.join(10)
    finally:
        if taker.is_alive():
            taker.kill()
            taker.join()
        conn.close()
    return common.latency_summary(latencies)


WORKLOADS = {"W0": w0, "W3": w3}
