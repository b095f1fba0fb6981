"""Named queries, PostgreSQL dialect: the SQLite ones (`sql`) with what differs overridden,
and `:name` parameters turned into psycopg's `%(name)s`.

What differs: JSON arrays are read with jsonb functions; NULL-safe equality is IS NOT
DISTINCT FROM; reads that fence a write lock the run's row (FOR SHARE / FOR UPDATE), so a
takeover committed by another worker cannot slip between the check and the write; claims
lock the runs they take with FOR UPDATE SKIP LOCKED, so workers claiming at once take
different runs without waiting on each other; the slots of a limited (queue, concurrency
key) and idempotency keys are guarded by transaction-level advisory locks.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from perdure.store import sql

_IN_TASKS = "task_id IN (SELECT jsonb_array_elements_text(CAST(:task_ids AS jsonb)))"
_SERVED = f"""r.{_IN_TASKS}
              AND (CAST(:version AS text) IS NULL OR r.version IS NULL OR r.version = :version)"""
_DUE = f"""r.status IN ('queued', 'delayed', 'retrying', 'waiting') AND r.due_at <= :now
              AND {_SERVED} AND {sql._LIVE}"""


def _with_event(set_clause: str) -> str:
    """A leased run's transition in one statement: it locks the run's row if the lease is
    held, updates it, records the event, deletes the journal entries given as `:drop` (a
    JSON array of [branch, seq, sub], or NULL) and, with `:free_key`, frees the run's
    idempotency key. It returns the state before, as GET_RUN_STATE reads it but for the
    lease's own columns; no row when the lease is gone, and then nothing was done."""
    return f"""WITH prior AS (
            SELECT id AS prior_id, status AS prior_status, attempts AS prior_attempts,
                lease_worker AS prior_worker
            FROM runs WHERE id = :run_id AND lease_token = :token FOR UPDATE),
        moved AS (
            UPDATE runs SET {set_clause}
            FROM prior WHERE runs.id = prior.prior_id
            RETURNING prior_status, prior_attempts, prior_worker, idempotency_key, task_id,
                parent_id, parent_branch, parent_seq, queue),
        event AS (
            INSERT INTO run_events (run_id, at, from_status, to_status, attempt, worker_id,
                detail)
            SELECT :run_id, :now, prior_status, CAST(:to_status AS text), prior_attempts,
                prior_worker, CAST(:detail AS text)
            FROM moved),
        dropped AS (
            DELETE FROM journal j
            USING jsonb_array_elements(CAST(:drop AS jsonb)) AS d(key)
            WHERE j.run_id = :run_id AND EXISTS (SELECT 1 FROM moved)
              AND j.branch = d.key ->> 0 AND j.seq = CAST(d.key ->> 1 AS integer)
              AND j.sub = d.key ->> 2),
        freed AS (
            DELETE FROM idempotency_keys k USING moved
            WHERE CAST(:free_key AS boolean) AND k.task_id = moved.task_id
              AND k.key = moved.idempotency_key AND k.run_id = :run_id)
        SELECT prior_status AS status, prior_attempts AS attempts,
            prior_worker AS lease_worker, idempotency_key, task_id, parent_id, parent_branch,
            parent_seq,
            EXISTS (SELECT 1 FROM queues q
                    WHERE q.name = moved.queue AND q.concurrency_limit IS NOT NULL) AS limited
        FROM moved"""


def _and_event(write: str) -> str:
    """A write of one run's row (INSERT or UPDATE, by `id`) and its event in one
    statement; the event is recorded if the row was written."""
    return f"""WITH written AS ({write} RETURNING id)
        INSERT INTO run_events (run_id, at, from_status, to_status, attempt, worker_id,
            detail)
        SELECT id, :now, CAST(:from_status AS text), CAST(:to_status AS text),
            CAST(:attempt AS integer), CAST(:worker_id AS text), CAST(:detail AS text)
        FROM written"""


def _each_with_event(set_clause: str, columns: str) -> str:
    """An UPDATE of many runs' rows (`set_clause`, its parameters read from each run's
    own) and their events in one statement. `:writes` is a JSON array of each run's
    parameters, its `id` and its event's (`columns`: their names and types). The rows are
    found by index whatever the table's statistics."""
    each = re.sub(r"(?<![:\w]):(?!now\b)([A-Za-z_]\w*)", r"g.\1", set_clause)
    return f"""WITH g AS (
            SELECT * FROM jsonb_to_recordset(CAST(:writes AS jsonb)) AS g(id text, {columns},
                from_status text, to_status text, attempt integer, worker_id text,
                detail text)),
        written AS (
            UPDATE runs SET {each} FROM g
            WHERE runs.id = g.id AND runs.id = ANY (ARRAY(SELECT id FROM g))
            RETURNING runs.id, g.from_status, g.to_status, g.attempt, g.worker_id, g.detail)
        INSERT INTO run_events (run_id, at, from_status, to_status, attempt, worker_id,
            detail)
        SELECT id, :now, from_status, to_status, attempt, worker_id, detail FROM written"""


OVERRIDES: dict[str, str] = {
    "INSERT_RUN_WITH_EVENT": _and_event(sql.INSERT_RUN),
    "TAKE_LEASE_WITH_EVENT": _and_event(sql.TAKE_LEASE),
    "TAKE_LEASES_WITH_EVENTS": _each_with_event(
        sql._TAKE_LEASE_SET,
        "token text, recoveries integer, version text, executed_seconds float8",
    ),
    "SUSPEND_WITH_EVENT": _with_event(sql._SUSPEND_SET),
    "RELEASE_WITH_EVENT": _with_event(sql._RELEASE_SET),
    "RETRY_LATER_WITH_EVENT": _with_event(sql._RETRY_LATER_SET),
    "FINISH_WITH_EVENT": _with_event(sql._FINISH_SET),
    "ORPHANED_RUNS": f"""SELECT r.id, {sql._claim_columns("r")}
        FROM runs r LEFT JOIN workers w ON w.id = r.lease_worker
        WHERE r.status = 'running' AND r.lease_worker != :worker_id
          AND (w.id IS NULL OR w.dead_at IS NOT NULL OR w.stopped_at IS NOT NULL)
          AND r.{_IN_TASKS}
          AND (CAST(:version AS text) IS NULL OR r.version IS NULL OR r.version = :version)
        LIMIT :limit
        FOR UPDATE OF r SKIP LOCKED""",
    # The run rows a claim finds are locked as they are returned, skipping those another
    # claim holds: workers claiming at once take different runs without waiting.
    "QUEUED_RUNS": f"""SELECT {sql._UNLIMITED_COLUMNS}
        FROM runs r
        WHERE r.status = 'queued' AND {_SERVED} AND {sql._LIVE}
          AND NOT EXISTS ({sql._LIMITED})
        ORDER BY r.priority DESC, r.due_at, r.id
        LIMIT :limit
        FOR UPDATE OF r SKIP LOCKED""",
    "DUE_RUNS": f"""SELECT {sql._UNLIMITED_COLUMNS}
        FROM runs r
        WHERE r.status IN ('delayed', 'retrying', 'waiting') AND r.due_at <= :now
          AND {_SERVED} AND {sql._LIVE} AND NOT EXISTS ({sql._LIMITED})
        ORDER BY r.priority DESC, r.due_at, r.id
        LIMIT :limit
        FOR UPDATE OF r SKIP LOCKED""",
    "LIMITED_CLAIMABLE_RUNS": f"""WITH busy AS (
            SELECT queue, concurrency_key AS ckey, COUNT(*) AS n FROM runs
            WHERE status = 'running' GROUP BY queue, concurrency_key
        ), candidates AS (
            SELECT r.id, r.queue, r.concurrency_key, r.priority, r.due_at, q.concurrency_limit,
                ROW_NUMBER() OVER (PARTITION BY r.queue, r.concurrency_key
                                   ORDER BY r.priority DESC, r.due_at, r.id) AS rn
            FROM runs r
            JOIN queues q ON q.name = r.queue AND q.concurrency_limit IS NOT NULL
            WHERE {_DUE}
        ), ranked AS (
            SELECT c.id FROM candidates c
            LEFT JOIN busy b ON b.queue = c.queue
                AND b.ckey IS NOT DISTINCT FROM c.concurrency_key
            WHERE c.rn <= c.concurrency_limit - COALESCE(b.n, 0)
            ORDER BY c.priority DESC, c.due_at, c.id LIMIT :scan
        )
        SELECT r.id, r.queue, r.concurrency_key, q.concurrency_limit, r.priority, r.due_at,
            {sql._claim_columns("r")}
        FROM runs r JOIN queues q ON q.name = r.queue
        WHERE r.id IN (SELECT id FROM ranked) AND {_DUE}
        ORDER BY r.priority DESC, r.due_at, r.id
        LIMIT :limit
        FOR UPDATE OF r SKIP LOCKED""",
    "RUNNING_IN_SLOT": """SELECT COUNT(*) AS n FROM runs
        WHERE status = 'running' AND queue = :queue
          AND concurrency_key IS NOT DISTINCT FROM CAST(:ckey AS text)""",
    "EXPIRED_RUNS": """SELECT id FROM runs
        WHERE status IN ('queued', 'delayed') AND ttl_expires_at IS NOT NULL
          AND ttl_expires_at <= :now
        LIMIT 100
        FOR UPDATE SKIP LOCKED""",
    # One index lookup per run, whatever the table's statistics: as `run_id = ANY(...)`
    # a young table's (not yet analyzed) was read whole at every claim (1.7 ms at 6,000
    # entries, against 0.04 in W2). OFFSET 0 keeps the lookup from becoming a join the planner
    # may make a hash join of, reading the table whole again.
    "JOURNALS_OF": f"""SELECT e.* FROM jsonb_array_elements_text(CAST(:run_ids AS jsonb)) AS ids(id)
        CROSS JOIN LATERAL (SELECT {sql.ENTRY_COLUMNS}, run_id FROM journal
                            WHERE run_id = ids.id OFFSET 0) AS e""",
    "NEXT_DUE": f"""SELECT MIN(due_at) AS due FROM runs
        WHERE status IN ('queued', 'delayed', 'retrying', 'waiting') AND due_at > :now
          AND {_IN_TASKS}""",
    "LIST_RUNS": f"""SELECT {sql.RUN_COLUMNS} FROM runs
        WHERE (CAST(:statuses AS text) IS NULL
               OR status IN (SELECT jsonb_array_elements_text(CAST(:statuses AS jsonb))))
          AND (CAST(:task_id AS text) IS NULL OR task_id = :task_id)
          AND (CAST(:tag AS text) IS NULL OR CAST(tags AS jsonb) ? CAST(:tag AS text))
          AND (CAST(:parent_id AS text) IS NULL OR parent_id = :parent_id)
          AND (CAST(:root_id AS text) IS NULL OR root_id = :root_id)
          AND (CAST(:created_after AS float8) IS NULL OR created_at >= :created_after)
          AND (CAST(:created_before AS float8) IS NULL OR created_at < :created_before)
          AND (CAST(:cursor AS text) IS NULL OR (created_at, id) <
                (SELECT created_at, id FROM runs WHERE id = :cursor))
        ORDER BY created_at DESC, id DESC
        LIMIT :limit""",
    "LIST_TOKENS": f"""SELECT {sql.TOKEN_COLUMNS} FROM tokens
        WHERE (CAST(:status AS text) IS NULL OR status = :status)
          AND (CAST(:run_id AS text) IS NULL OR run_id = :run_id)
          AND (CAST(:tag AS text) IS NULL OR CAST(tags AS jsonb) ? CAST(:tag AS text))
        ORDER BY created_at DESC, id DESC
        LIMIT :limit""",
    "SETTLED_WAITS": """SELECT j.run_id, j.branch, j.seq FROM journal j
        JOIN jsonb_array_elements(CAST(:waits AS jsonb)) w
          ON j.run_id = w.value ->> 0 AND j.branch = w.value ->> 1
         AND j.seq = CAST(w.value ->> 2 AS integer) AND j.sub = ''
        WHERE j.status != 'pending'""",
    "TOKENS_SETTLED": "SELECT 1 WHERE false",
    "CHECK_LEASE": """SELECT 1 FROM runs WHERE id = :run_id AND lease_token = :token
        FOR SHARE""",
    # The SELECT list's parameters carry no column types: cast what is not text.
    "UPSERT_ENTRY_FENCED": f"""WITH held AS (
            SELECT 1 FROM runs WHERE id = :run_id AND lease_token = :token FOR SHARE)
        INSERT INTO journal (run_id, branch, seq, sub, kind, name, status, result, error,
            attempts, wake_at, started_at, finished_at, attempt)
        SELECT :run_id, :branch, CAST(:seq AS integer), :sub, :kind, :name, :status,
            CAST(:result AS text), CAST(:error AS text), CAST(:attempts AS integer),
            CAST(:wake_at AS float8), CAST(:started_at AS float8),
            CAST(:finished_at AS float8), CAST(:attempt AS integer)
        FROM held
        {sql._ENTRY_UPDATE}""",
    # UPSERT_ENTRY_FENCED for many entries, of any runs, in one statement (`:entries`, a
    # JSON array of their parameters): each is written only while its run's lease is held,
    # and the keys written are returned.
    "UPSERT_ENTRIES_FENCED": f"""WITH given AS (
            SELECT * FROM jsonb_to_recordset(CAST(:entries AS jsonb)) AS e(
                run_id text, token text, branch text, seq integer, sub text, kind text,
                name text, status text, result text, error text, attempts integer,
                wake_at float8, started_at float8, finished_at float8, attempt integer)),
        held AS (
            SELECT r.id, r.lease_token FROM (SELECT DISTINCT run_id, token FROM given) AS l
            CROSS JOIN LATERAL (SELECT id, lease_token FROM runs
                                WHERE id = l.run_id AND lease_token = l.token
                                FOR SHARE) AS r)
        INSERT INTO journal (run_id, branch, seq, sub, kind, name, status, result, error,
            attempts, wake_at, started_at, finished_at, attempt)
        SELECT g.run_id, g.branch, g.seq, g.sub, g.kind, g.name, g.status, g.result, g.error,
            g.attempts, g.wake_at, g.started_at, g.finished_at, g.attempt
        FROM given g JOIN held ON held.id = g.run_id AND held.lease_token = g.token
        {sql._ENTRY_UPDATE}
        RETURNING run_id, branch, seq, sub""",
    "GET_RUN_STATE": f"""{sql.GET_RUN_STATE} FOR UPDATE OF runs""",
    "GET_TOKEN_FOR_UPDATE": f"SELECT {sql.TOKEN_COLUMNS} FROM tokens WHERE id = :id FOR UPDATE",
    "LOCK_SLOT": """SELECT pg_try_advisory_xact_lock(7157242,
        hashtext(CAST(:queue AS text) || ':' || COALESCE(CAST(:ckey AS text), ''))) AS taken""",
    "LOCK_IDEMPOTENCY_KEY": """SELECT pg_advisory_xact_lock(
        hashtext(CAST(:task_id AS text) || ':' || CAST(:key AS text)))""",
    "INSERT_LOG": """INSERT INTO logs (run_id, attempt, branch, seq, level, message, at)
        VALUES (:run_id, :attempt, :branch, :seq, :level, :message, :at)""",
}


def _claim_reads() -> str:
    """What a claim reads first (QUEUED_RUNS, DUE_RUNS, ORPHANED_RUNS, EXPIRED_RUNS and
    CLAIMER) in one statement, which costs the worker's thread one statement's work, not
    five: each row tagged with the read it answers (`part`), in one set of columns (those
    a read has not, NULL)."""
    due = ("id", "queue", "concurrency_key", "concurrency_limit", "priority", "due_at")
    found = (*due, *sql.CLAIM_COLUMN_NAMES)

    def columns(*present: str) -> str:
        return ", ".join(name if name in present else f"NULL AS {name}" for name in found)

    no_claimer = (
        "CAST(NULL AS float8) AS now, CAST(NULL AS boolean) AS alive, "
        "CAST(NULL AS boolean) AS limited"
    )
    reads = {
        "queued": OVERRIDES["QUEUED_RUNS"],
        "due": OVERRIDES["DUE_RUNS"],
        "orphaned": OVERRIDES["ORPHANED_RUNS"],
        "expired": OVERRIDES["EXPIRED_RUNS"],
        "claimer": sql.CLAIMER,
    }
    with_ = ",\n        ".join(f"{name} AS ({query})" for name, query in reads.items())
    # The typed columns come first: a UNION infers a column's type pair by pair.
    return f"""WITH {with_}
        SELECT 'queued' AS part, {no_claimer}, {columns(*found)} FROM queued
        UNION ALL SELECT 'due', {no_claimer}, {columns(*found)} FROM due
        UNION ALL SELECT 'orphaned', {no_claimer},
            {columns("id", *sql.CLAIM_COLUMN_NAMES)} FROM orphaned
        UNION ALL SELECT 'expired', {no_claimer}, {columns("id")} FROM expired
        UNION ALL SELECT 'claimer', now, alive, limited, {columns()} FROM claimer"""


OVERRIDES["CLAIM_READS"] = _claim_reads()

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


# `:now` is the transaction's clock (`Tx.now`), read by the server itself: a statement
# needs no round trip of its own to learn it first.
CLOCK = "CAST(EXTRACT(EPOCH FROM now()) AS float8)"


def to_pyformat(query: str) -> str:
    """`:name` -> `%(name)s` (and a literal `%` -> `%%`); `:now` -> the clock."""
    return _PARAM.sub(lambda m: CLOCK if m[1] == "now" else f"%({m[1]})s", query.replace("%", "%%"))


def dialect() -> Any:
    """Every named query of `sql`, in the PostgreSQL dialect."""
    queries = {
        name: value
        for name, value in vars(sql).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }
    queries.update(OVERRIDES)
    return SimpleNamespace(**{name: to_pyformat(text) for name, text in queries.items()})


Q = dialect()
