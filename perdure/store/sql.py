"""Named queries (SQLite dialect, `:name` parameters). The only SQL in perdure besides
migrations; never built from input."""

RUN_COLUMNS = """id, task_id, queue, concurrency_key, priority, status, payload, output, error,
    attempts, recoveries, tags, metadata, parent_id, root_id, idempotency_key, version,
    created_at, started_at, finished_at"""

ENTRY_COLUMNS = """ord, branch, seq, sub, kind, name, status, result, error, attempts, wake_at,
    started_at, finished_at, attempt"""

GET_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = :id"

GET_RUN_STATE = """SELECT status, attempts, lease_token, lease_worker, idempotency_key, task_id,
        parent_id, parent_branch, parent_seq,
        EXISTS (SELECT 1 FROM queues q
                WHERE q.name = runs.queue AND q.concurrency_limit IS NOT NULL) AS limited
    FROM runs WHERE id = :id"""

FIND_KEY = """SELECT run_id, expires_at FROM idempotency_keys
    WHERE task_id = :task_id AND key = :key"""

HOLD_KEY = """INSERT INTO idempotency_keys (task_id, key, run_id, expires_at)
    VALUES (:task_id, :key, :run_id, :expires_at)
    ON CONFLICT (task_id, key) DO UPDATE SET run_id = excluded.run_id,
        expires_at = excluded.expires_at"""

FREE_KEY = "DELETE FROM idempotency_keys WHERE run_id = :run_id"

# The key a run holds, by the table's primary key (FREE_KEY reads the whole table).
FREE_HELD_KEY = """DELETE FROM idempotency_keys
    WHERE task_id = :task_id AND key = :key AND run_id = :run_id"""

INSERT_RUN = """INSERT INTO runs (id, task_id, queue, concurrency_key, priority, status, payload,
        tags, parent_id, root_id, idempotency_key, version, created_at, due_at, ttl_expires_at,
        parent_branch, parent_seq, batch_index)
    VALUES (:id, :task_id, :queue, :concurrency_key, :priority, :status, :payload, :tags,
        :parent_id, :root_id, :idempotency_key, :version, :now, :now + :delay,
        :now + CAST(:ttl AS DOUBLE PRECISION), :parent_branch, :parent_seq, :batch_index)"""

INSERT_EVENT = """INSERT INTO run_events (run_id, at, from_status, to_status, attempt, worker_id,
        detail)
    VALUES (:run_id, :now, :from_status, :to_status, :attempt, :worker_id, :detail)"""

LIST_EVENTS = """SELECT at, from_status, to_status, attempt, worker_id, detail
    FROM run_events WHERE run_id = :run_id ORDER BY id"""

LIST_JOURNAL = f"SELECT {ENTRY_COLUMNS} FROM journal WHERE run_id = :run_id ORDER BY ord"

# The journals of the runs a claim takes, in one statement and in no set order: a claim
# indexes the entries by key, and spares the database a sort of them.
JOURNALS_OF = f"""SELECT {ENTRY_COLUMNS}, run_id FROM journal
    WHERE run_id IN (SELECT value FROM json_each(:run_ids))"""

LIST_LOGS = """SELECT attempt, branch, seq, level, message, at FROM logs
    WHERE run_id = :run_id ORDER BY id"""

# --- claiming ------------------------------------------------------------------------------


# What a claim reads of each run it takes, returned by the query that found (and, on
# PostgreSQL, locked) the run: no statement of its own.
CLAIM_COLUMN_NAMES = ("task_id", "status", "payload", "attempts", "recoveries", "tags",
                      "parent_id", "root_id", "idempotency_key", "version", "executed_seconds",
                      "cancel_requested_at", "started_at", "next_attempt",
                      "lease_worker")  # fmt: skip


def _claim_columns(alias: str) -> str:
    return ", ".join(f"{alias}.{name}" for name in CLAIM_COLUMN_NAMES)


# Running runs whose worker is gone (dead, stopped, or never registered).
ORPHANED_RUNS = f"""SELECT r.id, {_claim_columns("r")} FROM runs r INDEXED BY runs_by_worker
    LEFT JOIN workers w ON w.id = r.lease_worker
    WHERE r.status = 'running' AND r.lease_worker != :worker_id
      AND (w.id IS NULL OR w.dead_at IS NOT NULL OR w.stopped_at IS NOT NULL)
      AND r.task_id IN (SELECT value FROM json_each(:task_ids))
      AND (:version IS NULL OR r.version IS NULL OR r.version = :version)
    LIMIT :limit"""

# Due runs. A claim reads the runs of unlimited queues straight by priority and due time:
# queued runs (due from the moment they are queued) from an index in that order, reading
# no more than it takes however long the backlog, and the runs whose delay, retry or wait
# came due by due time. Only where some queue has a concurrency limit does it read the runs
# of limited queues too, at most as many per (queue, concurrency key) as the limit leaves
# free, so that a full queue never hides the runs of others behind it. A queued or delayed
# run whose ttl has passed is never due: the claim's transaction ends it instead.
_SERVED = """r.task_id IN (SELECT value FROM json_each(:task_ids))
          AND (:version IS NULL OR r.version IS NULL OR r.version = :version)"""
_LIVE = """(r.ttl_expires_at IS NULL OR r.ttl_expires_at > :now
               OR r.status NOT IN ('queued', 'delayed'))"""
_DUE = f"""r.status IN ('queued', 'delayed', 'retrying', 'waiting') AND r.due_at <= :now
          AND {_SERVED} AND {_LIVE}"""

_LIMITED = "SELECT 1 FROM queues q WHERE q.name = r.queue AND q.concurrency_limit IS NOT NULL"

_UNLIMITED_COLUMNS = f"""r.id, r.queue, r.concurrency_key, NULL AS concurrency_limit,
        r.priority, r.due_at, {_claim_columns("r")}"""

QUEUED_RUNS = f"""SELECT {_UNLIMITED_COLUMNS}
    FROM runs r INDEXED BY runs_queued  -- never the index by task, with its finished runs
    WHERE r.status = 'queued' AND {_SERVED} AND {_LIVE} AND NOT EXISTS ({_LIMITED})
    ORDER BY r.priority DESC, r.due_at, r.id
    LIMIT :limit"""

DUE_RUNS = f"""SELECT {_UNLIMITED_COLUMNS}
    FROM runs r INDEXED BY runs_woken  -- whose condition the query repeats word for word
    WHERE r.status IN ('delayed', 'retrying', 'waiting') AND r.due_at <= :now
      AND {_SERVED} AND {_LIVE} AND NOT EXISTS ({_LIMITED})
    ORDER BY r.priority DESC, r.due_at, r.id
    LIMIT :limit"""

# What a claim must know of its worker and of the queues before it takes anything.
CLAIMER = """SELECT :now AS now,
    EXISTS (SELECT 1 FROM workers
            WHERE id = :worker_id AND dead_at IS NULL AND stopped_at IS NULL) AS alive,
    EXISTS (SELECT 1 FROM queues WHERE concurrency_limit IS NOT NULL) AS limited"""

LIMITED_CLAIMABLE_RUNS = f"""WITH busy AS (
        SELECT queue, concurrency_key AS ckey, COUNT(*) AS n FROM runs
        WHERE status = 'running' GROUP BY queue, concurrency_key
    ), candidates AS (
        SELECT r.id, q.concurrency_limit,
            ROW_NUMBER() OVER (PARTITION BY r.queue, r.concurrency_key
                               ORDER BY r.priority DESC, r.due_at, r.id) AS rn
        FROM runs r INDEXED BY runs_due
        JOIN queues q ON q.name = r.queue AND q.concurrency_limit IS NOT NULL
        WHERE {_DUE}
    )
    SELECT r.id, r.queue, r.concurrency_key, c.concurrency_limit, r.priority, r.due_at,
        {_claim_columns("r")}
    FROM candidates c JOIN runs r ON r.id = c.id
    LEFT JOIN busy b ON b.queue = r.queue AND b.ckey IS r.concurrency_key
    WHERE c.rn <= c.concurrency_limit - COALESCE(b.n, 0)
    ORDER BY r.priority DESC, r.due_at, r.id
    LIMIT :limit"""

# Runs holding slots of one (queue, concurrency key), counted once its slots are locked.
RUNNING_IN_SLOT = """SELECT COUNT(*) AS n FROM runs
    WHERE status = 'running' AND queue = :queue AND concurrency_key IS :ckey"""


_TAKE_LEASE_SET = """status = 'running', lease_token = :token,
        lease_worker = :worker_id, attempts = :attempt, recoveries = :recoveries,
        version = COALESCE(runs.version, :version),
        started_at = COALESCE(runs.started_at, :now), executed_seconds = :executed_seconds"""

TAKE_LEASE = f"UPDATE runs SET {_TAKE_LEASE_SET} WHERE id = :id"

EXPIRED_RUNS = """SELECT id FROM runs
    WHERE status IN ('queued', 'delayed') AND ttl_expires_at IS NOT NULL
      AND ttl_expires_at <= :now
    LIMIT 100"""

EXPIRE = """UPDATE runs SET status = 'expired', finished_at = :now, error = :error
    WHERE id = :id"""

# --- writes of a leased run (fenced by the lease token) -------------------------------------

CHECK_LEASE = "SELECT 1 FROM runs WHERE id = :run_id AND lease_token = :token"

_ENTRY_UPDATE = """ON CONFLICT (run_id, branch, seq, sub) DO UPDATE SET status = excluded.status,
        result = excluded.result, error = excluded.error, attempts = excluded.attempts,
        wake_at = excluded.wake_at, finished_at = excluded.finished_at,
        attempt = excluded.attempt"""

UPSERT_ENTRY = f"""INSERT INTO journal (run_id, branch, seq, sub, kind, name, status, result,
        error, attempts, wake_at, started_at, finished_at, attempt)
    VALUES (:run_id, :branch, :seq, :sub, :kind, :name, :status, :result, :error, :attempts,
        :wake_at, :started_at, :finished_at, :attempt)
    {_ENTRY_UPDATE}"""

# UPSERT_ENTRY and CHECK_LEASE in one statement, for a checkpoint's first entry: it writes
# (and counts one row) only while the run's lease is held. One statement fewer per step,
# which on PostgreSQL is one network round trip fewer.
UPSERT_ENTRY_FENCED = f"""INSERT INTO journal (run_id, branch, seq, sub, kind, name, status,
        result, error, attempts, wake_at, started_at, finished_at, attempt)
    SELECT :run_id, :branch, :seq, :sub, :kind, :name, :status, :result, :error, :attempts,
        :wake_at, :started_at, :finished_at, :attempt
    WHERE EXISTS (SELECT 1 FROM runs WHERE id = :run_id AND lease_token = :token)
    {_ENTRY_UPDATE}"""

DELETE_ENTRY = """DELETE FROM journal
    WHERE run_id = :run_id AND branch = :branch AND seq = :seq AND sub = :sub"""

INSERT_LOG = """INSERT INTO logs (run_id, attempt, branch, seq, level, message, at)
    VALUES (:run_id, :attempt, :branch, :seq, :level, :message, :at)"""

GET_METADATA = "SELECT metadata FROM runs WHERE id = :run_id"

SET_METADATA = "UPDATE runs SET metadata = :metadata WHERE id = :run_id"

# A leased run's transitions: what each sets, fenced by its lease. PostgreSQL makes each
# one statement with the state it found and its event (pg_sql._with_event); here they are
# three (GET_RUN_STATE, the update, INSERT_EVENT), each on the process's own file.
_SUSPEND_SET = """status = 'waiting', lease_token = NULL,
        due_at = CASE WHEN cancel_requested_at IS NULL THEN :due_at ELSE :now END,
        lease_worker = NULL, executed_seconds = :executed_seconds"""

_RELEASE_SET = """status = 'queued', due_at = :now, lease_token = NULL, lease_worker = NULL,
        executed_seconds = :executed_seconds"""

_RETRY_LATER_SET = """status = 'retrying', due_at = :now + :delay, error = :error,
        next_attempt = attempts + 1,
        lease_token = NULL, lease_worker = NULL, executed_seconds = 0"""

_FINISH_SET = """status = :status, output = :output, error = :error, escaped = :escaped,
        finished_at = :now, lease_token = NULL, lease_worker = NULL,
        cancel_requested_at = NULL"""

_FENCE = "WHERE id = :run_id AND lease_token = :token"

SUSPEND = f"UPDATE runs SET {_SUSPEND_SET} {_FENCE}"
RELEASE = f"UPDATE runs SET {_RELEASE_SET} {_FENCE}"
RETRY_LATER = f"UPDATE runs SET {_RETRY_LATER_SET} {_FENCE}"
FINISH = f"UPDATE runs SET {_FINISH_SET} {_FENCE}"

# Where a dialect makes a write of a run's row and its event one statement (PostgreSQL:
# pg_sql; a transition returns the state it found too), these are those statements.
# SQLite has none: its statements cost no round trip.
SUSPEND_WITH_EVENT = RELEASE_WITH_EVENT = RETRY_LATER_WITH_EVENT = FINISH_WITH_EVENT = None
INSERT_RUN_WITH_EVENT = TAKE_LEASE_WITH_EVENT = TAKE_LEASES_WITH_EVENTS = None
CLAIM_READS = None  # PostgreSQL: a claim's first reads in one statement

# --- client transitions ------------------------------------------------------------------

CANCEL_IDLE = """UPDATE runs SET status = 'canceled', finished_at = :now, lease_token = NULL,
        lease_worker = NULL
    WHERE id = :id"""

REQUEST_CANCEL = """UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, :now)
    WHERE id = :id"""

# A run that had started is woken to run its cancellation cleanup.
REQUEST_CANCEL_AND_WAKE = """UPDATE runs
    SET cancel_requested_at = COALESCE(cancel_requested_at, :now), due_at = :now
    WHERE id = :id"""

CANCEL_REQUESTS = """SELECT id FROM runs
    WHERE lease_worker = :worker_id AND status = 'running'
      AND cancel_requested_at IS NOT NULL"""

GET_ESCAPED = "SELECT escaped FROM runs WHERE id = :id"

REQUEUE = """UPDATE runs SET status = 'queued', due_at = :now, finished_at = NULL, escaped = NULL,
        next_attempt = attempts + 1,
        output = NULL, cancel_requested_at = NULL, executed_seconds = 0
    WHERE id = :id"""

COPY_ENTRIES = """INSERT INTO journal (run_id, branch, seq, sub, kind, name, status, result,
        error, attempts, wake_at, started_at, finished_at, attempt)
    SELECT :new_id, branch, seq, sub, kind, name, status, result, error, attempts, wake_at,
        started_at, finished_at, 1
    FROM journal WHERE run_id = :run_id AND ord < :before_ord ORDER BY ord"""

ENTRY_ORD = """SELECT ord FROM journal
    WHERE run_id = :run_id AND branch = :branch AND seq = :seq AND sub = ''"""

# --- workers and queues ------------------------------------------------------------------

INSERT_WORKER = """INSERT INTO workers (id, hostname, pid, version, concurrency, started_at,
        heartbeat_at)
    VALUES (:id, :hostname, :pid, :version, :concurrency, :now, :now)"""

HEARTBEAT = """UPDATE workers SET heartbeat_at = :now
    WHERE id = :id AND dead_at IS NULL AND stopped_at IS NULL"""

STOP_WORKER = "UPDATE workers SET stopped_at = :now WHERE id = :id AND stopped_at IS NULL"

LIVE_WORKERS = """SELECT id, heartbeat_at FROM workers
    WHERE stopped_at IS NULL AND dead_at IS NULL"""

MARK_DEAD = "UPDATE workers SET dead_at = :now WHERE id = :id AND dead_at IS NULL"

UPSERT_QUEUE = """INSERT INTO queues (name, concurrency_limit) VALUES (:name, :limit)
    ON CONFLICT (name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit"""

NEXT_DUE = """SELECT MIN(due_at) AS due FROM runs INDEXED BY runs_due
    WHERE status IN ('queued', 'delayed', 'retrying', 'waiting') AND due_at > :now
      AND task_id IN (SELECT value FROM json_each(:task_ids))"""

# --- listing -----------------------------------------------------------------------------

LIST_RUNS = f"""SELECT {RUN_COLUMNS} FROM runs
    WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
      AND (:task_id IS NULL OR task_id = :task_id)
      AND (:tag IS NULL OR EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE value = :tag))
      AND (:parent_id IS NULL OR parent_id = :parent_id)
      AND (:root_id IS NULL OR root_id = :root_id)
      AND (:created_after IS NULL OR created_at >= :created_after)
      AND (:created_before IS NULL OR created_at < :created_before)
      AND (:cursor IS NULL OR (created_at, id) <
            (SELECT created_at, id FROM runs WHERE id = :cursor))
    ORDER BY created_at DESC, id DESC
    LIMIT :limit"""

WAITING_TASKS = """SELECT task_id, COUNT(*) AS n FROM runs
    WHERE status IN ('queued', 'delayed', 'retrying', 'waiting')
    GROUP BY task_id"""

# --- tokens ------------------------------------------------------------------------------

TOKEN_COLUMNS = """id, run_id, status, data, timeout_at, tags, idempotency_key, created_at,
    completed_at"""

GET_TOKEN = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = :id"

TOKEN_BY_KEY = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE idempotency_key = :key"

RELEASE_TOKEN_KEY = "UPDATE tokens SET idempotency_key = NULL WHERE id = :id"

INSERT_TOKEN = """INSERT INTO tokens (id, run_id, status, timeout_at, tags, idempotency_key,
        created_at)
    VALUES (:id, :run_id, 'waiting', :timeout_at, :tags, :key, :now)"""

SET_TOKEN_STATUS = """UPDATE tokens SET status = :status, data = :data, completed_at = :now
    WHERE id = :id AND status = 'waiting'"""

# Journal entries waiting on a token, across runs (a token may be shared by its key).
PENDING_WAITS = """SELECT run_id, branch, seq FROM journal
    WHERE kind = 'wait' AND name = :token AND status = 'pending'"""

SETTLE_WAIT = """UPDATE journal SET status = :status, result = :result, error = :error,
        finished_at = :now
    WHERE run_id = :run_id AND branch = :branch AND seq = :seq AND sub = ''"""

WAKE_RUN = "UPDATE runs SET due_at = :now WHERE id = :run_id AND status = 'waiting'"

CANCEL_RUN_TOKENS = """UPDATE tokens SET status = 'canceled', completed_at = :now
    WHERE run_id = :run_id AND status = 'waiting'"""

LIST_TOKENS = f"""SELECT {TOKEN_COLUMNS} FROM tokens
    WHERE (:status IS NULL OR status = :status)
      AND (:run_id IS NULL OR run_id = :run_id)
      AND (:tag IS NULL OR EXISTS (SELECT 1 FROM json_each(tokens.tags) WHERE value = :tag))
    ORDER BY created_at DESC, id DESC
    LIMIT :limit"""

GET_META = "SELECT value FROM perdure_meta WHERE key = :key"

PUT_META_ONCE = """INSERT INTO perdure_meta (key, value) VALUES (:key, :value)
    ON CONFLICT (key) DO NOTHING"""

# Waits (journal entries) of a run that were settled: a token completed, children ended.
SETTLED_WAITS = """SELECT j.run_id, j.branch, j.seq FROM journal j
    JOIN json_each(:waits) w ON j.run_id = json_extract(w.value, '$[0]')
        AND j.branch = json_extract(w.value, '$[1]') AND j.seq = json_extract(w.value, '$[2]')
        AND j.sub = ''
    WHERE j.status != 'pending'"""

WORKER_ALIVE = """SELECT 1 FROM workers
    WHERE id = :worker_id AND dead_at IS NULL AND stopped_at IS NULL"""

# --- child runs ----------------------------------------------------------------------

RUN_EXISTS = "SELECT 1 FROM runs WHERE id = :id"

PARENT_ENTRY_OF = """SELECT parent_id, parent_branch, parent_seq FROM runs
    WHERE id = :id AND parent_id IS NOT NULL AND parent_seq IS NOT NULL"""

SIBLINGS = """SELECT id, status, output, error FROM runs
    WHERE parent_id = :parent_id AND parent_branch = :branch AND parent_seq = :seq
    ORDER BY batch_index"""

ENTRY_STATE = """SELECT kind, status FROM journal
    WHERE run_id = :run_id AND branch = :branch AND seq = :seq AND sub = ''"""

UNFINISHED_CHILDREN = """SELECT id FROM runs WHERE parent_id = :parent_id
    AND status NOT IN ('completed', 'failed', 'canceled', 'timed_out', 'expired')"""

GET_ENTRY = f"""SELECT {ENTRY_COLUMNS} FROM journal
    WHERE run_id = :run_id AND branch = :branch AND seq = :seq AND sub = ''"""

SET_LEASE_TOKEN = "UPDATE runs SET lease_token = :token WHERE id = :id"

GET_RUN_ROW = "SELECT * FROM runs WHERE id = :id"

# --- serialization points (no-ops here: SQLite's write lock serializes every write) ------

# Taken before the runs of one (queue, concurrency key) are counted and claimed, so no two
# claims fill the same slots; `taken` says whether it was free (else skip those runs now).
LOCK_SLOT = "SELECT 1 AS taken"

# Taken before an idempotency key is looked up: one run per key, however many triggers.
LOCK_IDEMPOTENCY_KEY = "SELECT 1 WHERE :task_id IS NOT NULL AND :key IS NOT NULL"

# A token read for completing it: the first completion wins.
GET_TOKEN_FOR_UPDATE = GET_TOKEN
