"""The PostgreSQL store: many workers on many machines against one database.

The batching thread and the operations come from `batched.BatchedStore`; this module holds
what is PostgreSQL's own: connecting with psycopg 3, migrations under an advisory lock,
the database clock, liveness through a session advisory lock that each worker holds on a
dedicated connection (with TCP keepalive, so it dies with the worker or its network), and
wake-ups through LISTEN/NOTIFY, with polling only as a fallback.

Connections per process: one for the batching thread (every write, group-committed), a
small pool for reads (`READ_CONNECTIONS`, so a dashboard's or a client's reads never queue
behind writes), one for LISTEN in a worker, and one per worker for its liveness lock:
at most five for a worker process, three for a client, whatever the concurrency. Each is
named in `pg_stat_activity` (application_name `perdure <role> <pid>`). Statements a
connection runs often are prepared on the server (psycopg's automatic preparation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from perdure import exceptions
from perdure.store import base, batched, connection, ops, pg_sql

CHANNEL = "perdure_work"
MIGRATION_LOCK = 7157241
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
READ_CONNECTIONS = 2
PREPARE_THRESHOLD = 2  # a statement run this many times on a connection is prepared


def _pool_module() -> Any:
    try:
        import psycopg_pool
    except ImportError:
        raise exceptions.ConfigurationError(
            "a postgresql:// database needs psycopg's pool: pip install 'perdure[postgres]'"
        ) from None
    return psycopg_pool


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise exceptions.ConfigurationError(
            "a postgresql:// database needs psycopg: pip install 'perdure[postgres]'"
        ) from None
    return psycopg


def _worker_lock_key(worker_id: str) -> int:
    return zlib.crc32(f"perdure-worker:{worker_id}".encode()) - 2**31


class _Tx:
    """A connection inside a transaction. In a write batch the connection is in pipeline
    mode: statements are sent at once and their answers awaited only when needed
    (`pipeline.sync`), so what was sent before and needs no answer of its own (BEGIN,
    the clock, writes nobody waits for, reads asked for later) travels in the same round
    trip."""

    def __init__(self, conn: Any, pipeline: Any = None) -> None:
        self.conn = conn
        self.q: Any = pg_sql.Q
        self._now: float | None = None
        self._sync = pipeline.sync if pipeline is not None else _nothing
        # Fenced entries not sent yet (in a pipeline only): consecutive ones go as one
        # statement, sent before any other statement (or COMMIT), so the order holds.
        self._merge = pipeline is not None
        self._entries: _Entries | None = None

    @property
    def now(self) -> float:
        """The transaction's clock on the server (the same as a query's `:now`), read when
        first needed: statements read it themselves, so most transactions never do."""
        if self._now is None:
            self._now = float(self._answer(self.conn.execute(_CLOCK)).fetchone()["now"])
        return self._now

    def _answer(self, cursor: Any) -> Any:
        """`cursor`, once its statement was answered."""
        if cursor.pgresult is None:
            self._sync()
        return cursor

    def rows(self, query: str, params: Mapping[str, Any]) -> Sequence[ops.Row]:
        return self.rows_later(query, params)()

    def rows_later(self, query: str, params: Mapping[str, Any]) -> Callable[[], Sequence[ops.Row]]:
        self.flush()
        return self._later(self.conn.execute(query, params))

    def fenced_entry(self, params: Mapping[str, Any]) -> Callable[[], bool]:
        if not self._merge:
            count = self.count_later(self.q.UPSERT_ENTRY_FENCED, params)
            return lambda: count() > 0
        key = (params["run_id"], params["branch"], params["seq"], params["sub"])
        group = self._entries
        if group is None or key in group.keys:  # a statement may write a row only once
            self.flush()
            group = self._entries = _Entries()
        group.params.append(params)
        group.keys.add(key)
        return lambda: group.written(key)

    def flush(self) -> None:
        """Send the fenced entries not sent yet, as one statement answered with the next."""
        group, self._entries = self._entries, None
        if group is not None:
            entries = {"entries": ops.records(group.params)}
            group.rows = self._later(self.conn.execute(self.q.UPSERT_ENTRIES_FENCED, entries))

    def _later(self, cursor: Any) -> Callable[[], Sequence[Any]]:
        """A function returning `cursor`'s rows, however often it is called."""
        found: list[Sequence[Any]] = []

        def fetch() -> Sequence[Any]:
            if not found:
                self._answer(cursor)
                found.append(cursor.fetchall() if cursor.description else [])
            return found[0]

        return fetch

    def run(self, query: str, params: Mapping[str, Any]) -> int:
        self.flush()
        cursor = self.conn.execute(query, params)
        self._sync()
        return int(cursor.rowcount)

    def count_later(self, query: str, params: Mapping[str, Any]) -> Callable[[], int]:
        self.flush()
        cursor = self.conn.execute(query, params)  # in a pipeline: answered with COMMIT
        return lambda: int(cursor.rowcount)

    def send(self, query: str, params: Mapping[str, Any]) -> None:
        self.flush()
        self.conn.execute(query, params)  # in a pipeline: answered with the next sync

    def values(self, query: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        return self.values_later(query, params)()

    def values_later(
        self, query: str, params: Mapping[str, Any]
    ) -> Callable[[], Sequence[tuple[Any, ...]]]:
        self.flush()
        cursor = self.conn.cursor(row_factory=_psycopg().rows.tuple_row)
        # In binary: numbers come as they are stored, not as text to parse (a claim's read
        # of a 10,000-entry journal: 40 ms as text, 30 in binary).
        cursor.execute(query, params, binary=True)
        return self._later(cursor)


class _Entries:
    """Fenced entries sent as one statement (UPSERT_ENTRIES_FENCED), and which of them it
    wrote (those whose run's lease was held), once answered."""

    __slots__ = ("_written", "keys", "params", "rows")

    def __init__(self) -> None:
        self.params: list[Mapping[str, Any]] = []
        self.keys: set[tuple[Any, ...]] = set()
        self.rows: Callable[[], Sequence[ops.Row]] = list
        self._written: set[tuple[Any, ...]] | None = None

    def written(self, key: tuple[Any, ...]) -> bool:
        if self._written is None:
            self._written = {(r["run_id"], r["branch"], r["seq"], r["sub"]) for r in self.rows()}
        return key in self._written


_CLOCK = f"SELECT {pg_sql.CLOCK} AS now"


def _nothing() -> None:
    pass


class PostgresStore(batched.BatchedStore):
    """The Store on one PostgreSQL database, shared by any number of processes."""

    label = "postgres"

    def __init__(self, url: str, *, read_connections: int = READ_CONNECTIONS) -> None:
        super().__init__()
        self.url = url
        self.wakeup = Wakeup(self)
        self._read_connections = read_connections
        self._pool: Any = None
        self._readers: ThreadPoolExecutor | None = None
        self._pipeline: Any = None  # the write batch's, on the store's thread
        self._leave: Any = None  # how the batch leaves pipeline mode

    def _options(self, role: str) -> dict[str, Any]:
        psycopg = _psycopg()
        return {
            "autocommit": True,
            "row_factory": psycopg.rows.dict_row,
            "prepare_threshold": PREPARE_THRESHOLD,
            "application_name": f"perdure {role} {os.getpid()}",
        }

    def _connection(self, role: str, **options: Any) -> Any:
        psycopg = _psycopg()
        try:
            return psycopg.Connection.connect(self.url, **self._options(role), **options)
        except psycopg.Error as error:
            raise exceptions.StoreError(f"cannot connect to {self._safe_url()}: {error}") from None

    def _safe_url(self) -> str:
        head, _, tail = self.url.rpartition("@")
        return f"postgresql://...@{tail}" if head else self.url

    # --- BatchedStore hooks ------------------------------------------------------------

    def _connect(self) -> Any:
        conn = self._connection("writes")
        try:
            _migrate(conn, self._safe_url())
        except BaseException:
            conn.close()
            raise
        return conn

    def _tx(self, conn: Any) -> ops.Tx:
        return _Tx(conn, self._pipeline)

    def _commit(
        self,
        conn: Any,
        jobs: list[connection.Job],
        isolate: bool,
        final: bool = False,
        begun: bool = False,
    ) -> bool:
        """A batch in pipeline mode: BEGIN goes with the batch's first statement, the
        notification with COMMIT, and the batch leaves pipeline mode with COMMIT's
        answer, one round trip fewer each. A batch run again with each operation in a
        savepoint (one of them failed) runs without: it is rare."""
        if isolate:
            return super()._commit(conn, jobs, isolate, final, begun)
        psycopg = _psycopg()
        delivered = False
        try:
            with contextlib.suppress(psycopg.Error):
                mode = conn.pipeline()
                self._pipeline, self._leave = mode.__enter__(), mode.__exit__
                delivered = super()._commit(conn, jobs, isolate, final, begun)
        finally:
            with contextlib.suppress(psycopg.Error):
                self._leave_pipeline()
        # The ROLLBACK of a failed batch may have met a pipeline the server was skipping:
        # whatever happened, the connection leaves idle, ready for the next batch.
        idle = psycopg.pq.TransactionStatus.IDLE
        if not conn.broken and conn.info.transaction_status != idle:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        if final and not delivered:  # the pipeline could not even start
            failure = exceptions.StoreError(f"database {self._safe_url()}: the write failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(failure)
            delivered = True
        return delivered

    def _begin(self, conn: Any, durable: bool) -> None:
        conn.execute("BEGIN")  # in a pipeline: no round trip of its own
        if not durable:
            conn.execute("SET LOCAL synchronous_commit TO off")

    def _end(self, conn: Any) -> None:
        conn.execute("COMMIT")
        # Committed (and durable) before anyone is told: leaving pipeline mode waits for
        # every answer, COMMIT's last (a sync of its own and then leaving would cost a
        # round trip more, before the next batch could begin).
        self._leave_pipeline()

    def _leave_pipeline(self) -> None:
        leave, self._leave, self._pipeline = self._leave, None, None
        if leave is not None:
            leave(None, None, None)

    def _not_committed(self, conn: Any, error: BaseException) -> bool:
        # In a pipeline, COMMIT travels with the statements sent without waiting (`send`).
        # Once the server refuses a statement it skips the rest until the pipeline's next
        # sync, COMMIT included; a COMMIT it refuses itself rolls back. Only the end of
        # the session (FATAL) or of the connection leaves the outcome unknown.
        if not isinstance(error, _psycopg().Error) or conn.broken:
            return False
        return error.sqlstate is not None and error.diag.severity_nonlocalized == "ERROR"

    def _translate(self, error: BaseException) -> BaseException:
        psycopg = _psycopg()
        if isinstance(error, psycopg.Error):
            first_line = str(error).partition("\n")[0]  # without the DETAIL and HINT lines
            return exceptions.StoreError(f"database {self._safe_url()}: {first_line}")
        return error

    def _broken(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def notify(self, cancel: bool = False) -> None:
        kind = connection.CANCEL if cancel else connection.WORK
        with contextlib.suppress(exceptions.StoreError):
            self._submit(lambda tx: tx.run(f"NOTIFY {CHANNEL}, '{kind}'", {}), True)

    def _before_commit(self, conn: Any, wake: str | None) -> None:
        # One notification for a whole batch, delivered when it commits.
        if wake is not None:
            conn.execute(f"NOTIFY {CHANNEL}, '{wake}'")

    def _contended(self) -> None:
        self.wakeup.wake(after=0.005)  # the other claim commits within milliseconds

    def _closed(self) -> None:
        for worker_id in list(self._locks):
            self._unlock(worker_id)
        self.wakeup.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5)
        if self._readers is not None:
            self._readers.shutdown(wait=False)

    # --- reads, on the pool ------------------------------------------------------------

    async def open(self) -> None:
        await super().open()
        if self._pool is None:
            self._pool = _pool_module().ConnectionPool(
                self.url,
                min_size=1,
                max_size=self._read_connections,
                kwargs=self._options("reads"),
                open=False,
                name="perdure-reads",
            )
            self._pool.open(wait=False)
            self._readers = ThreadPoolExecutor(
                self._read_connections, thread_name_prefix="perdure-read"
            )

    async def _read_op(self, op: batched.Op) -> Any:
        if self._pool is None or self._readers is None:
            raise exceptions.StoreError("the store is not open (or was closed)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._pooled_read, op)

    def _pooled_read(self, op: batched.Op) -> Any:
        try:
            with self._pool.connection(timeout=10) as conn:
                return op(_Tx(conn))
        except Exception as error:
            raise self._translate(error) from None

    # --- lifecycle --------------------------------------------------------------------

    async def migrate(self) -> int:
        return int(await self._read_op(lambda tx: _current_version(tx.conn)))  # type: ignore[attr-defined]

    async def now(self) -> float:
        found: float = await self._read_op(lambda tx: tx.now)
        return found

    # --- workers ---------------------------------------------------------------------

    async def register_worker(self, worker: base.WorkerInfo) -> None:
        # The lock is taken before the worker is visible, so nobody sees it unlocked.
        self._unlock(worker.id)  # a registration tried before and failed half-way
        loop = asyncio.get_running_loop()
        connect = lambda: self._connection(f"liveness {worker.id}", **KEEPALIVE)  # noqa: E731
        conn = await loop.run_in_executor(None, connect)
        conn.execute("SELECT pg_advisory_lock(%s)", (_worker_lock_key(worker.id),))
        self._locks[worker.id] = conn
        params = {**worker.__dict__}
        await self._write_op(lambda tx: tx.run(tx.q.INSERT_WORKER, params))
        self.wakeup.listen(worker.id)

    async def stop_worker(self, worker_id: str) -> None:
        await self._write_op(lambda tx: tx.run(tx.q.STOP_WORKER, {"id": worker_id}))
        self._unlock(worker_id)
        self.notify()

    def _unlock(self, worker_id: str) -> None:
        conn = self._locks.pop(worker_id, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()  # the session ends: its advisory lock goes with it

    def heartbeat(self, worker_id: str) -> bool:
        lock = self._locks.get(worker_id)
        try:
            if lock is not None:
                lock.execute("SELECT 1")  # the session holding the liveness lock lives
        except Exception:
            return False  # its lock is gone: others may take its runs; it must stop
        op = lambda tx: tx.run(tx.q.HEARTBEAT, {"id": worker_id})  # noqa: E731
        return bool(self._submit(op, True).result())

    def _lock_held(self, tx: ops.Tx, worker_id: str) -> bool:
        # A session lock held by a live worker cannot be taken; a dead one's can.
        found = tx.rows(
            "SELECT pg_try_advisory_xact_lock(%(key)s) AS free",
            {"key": _worker_lock_key(worker_id)},
        )
        return not found[0]["free"]


class Wakeup:
    """LISTEN/NOTIFY: a thread listens on a connection of its own and wakes the loop."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._stop = threading.Event()
        self.cancel_asked = False  # set by the listening thread, taken by the worker

    def listen(self, name: str) -> None:
        if self._thread is not None:
            return
        self._conn = self.store._connection("listen", **KEEPALIVE)
        self._conn.execute(f"LISTEN {CHANNEL}")
        self._thread = threading.Thread(target=self._listen, name="perdure-listen", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                for notification in self._conn.notifies(timeout=1.0, stop_after=1):
                    if notification.payload == connection.CANCEL:
                        self.cancel_asked = True
                    self._wake()
            except Exception:  # the connection broke: polling carries on meanwhile
                if self._stop.wait(1.0):
                    return
                with contextlib.suppress(Exception):
                    self._conn = self.store._connection("listen", **KEEPALIVE)
                    self._conn.execute(f"LISTEN {CHANNEL}")

    def _wake(self) -> None:
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    def wake(self, after: float) -> None:
        """Wake this process's worker loop in `after` seconds (from the loop's thread)."""
        if self._loop is not None and self._event is not None:
            self._loop.call_later(after, self._event.set)

    async def wait(self, timeout: float) -> bool:
        if self._event is None:
            self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def notify(self) -> None:
        self.store.notify()

    def take_cancel_asked(self) -> bool:
        """Whether a wake-up since the last call said a run's cancellation was asked for."""
        asked, self.cancel_asked = self.cancel_asked, False
        return asked

    def close(self) -> None:
        self._stop.set()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


# --- migrations ----------------------------------------------------------------------------


def _scripts() -> list[tuple[int, str]]:
    folder = resources.files("perdure.store.migrations") / "postgres"
    found = []
    for item in folder.iterdir():
        if item.name.endswith(".sql") and item.name[:4].isdigit():
            found.append((int(item.name[:4]), item.read_text(encoding="utf-8")))
    return sorted(found)


def _current_version(conn: Any) -> int:
    row = conn.execute("SELECT to_regclass('perdure_meta') IS NOT NULL AS present").fetchone()
    if not row["present"]:
        return 0
    found = conn.execute("SELECT value FROM perdure_meta WHERE key = 'schema_version'").fetchone()
    return int(found["value"]) if found else 0


def _migrate(conn: Any, where: str) -> int:
    """Apply what is missing, under an advisory lock (safe from several processes at
    once); refuse a database that is someone else's or newer than this code."""
    from perdure.store import migrations

    scripts = _scripts()
    latest = scripts[-1][0]
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        version = _current_version(conn)
        if version > latest:
            raise exceptions.StoreError(
                f"{where} has schema version {version}, newer than this perdure knows "
                f"({latest}); upgrade perdure (nothing was changed)"
            )
        if version == 0:
            _refuse_foreign(conn, where)
        for number, script in scripts:
            if number <= version:
                continue
            with conn.transaction():
                for statement in migrations.statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO perdure_meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(number),),
                )
        return latest
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def _refuse_foreign(conn: Any, where: str) -> None:
    tables = [
        r["tablename"]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    ]
    if tables:
        raise exceptions.StoreError(
            f"{where} holds tables that are not perdure's ({', '.join(sorted(tables)[:3])}...); "
            "use a database of its own (nothing was changed)"
        )
