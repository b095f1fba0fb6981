-- perdure schema, version 1. Times are epoch seconds (REAL) from the database clock.

CREATE TABLE perdure_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE runs (
    id                 TEXT PRIMARY KEY,
    task_id            TEXT NOT NULL,
    queue              TEXT NOT NULL,
    concurrency_key    TEXT,
    priority           INTEGER NOT NULL DEFAULT 0,
    status             TEXT NOT NULL,
    payload            TEXT NOT NULL,
    output             TEXT,
    error              TEXT,
    -- journal keys of step failures that escaped the body of the last attempt: kept for
    -- the trace, dropped when `runs.retry` starts a new attempt (those steps run again)
    escaped            TEXT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    -- the attempt the next claim runs: a release or suspension resumes the same one
    next_attempt       INTEGER NOT NULL DEFAULT 1,
    recoveries         INTEGER NOT NULL DEFAULT 0,
    tags               TEXT NOT NULL DEFAULT '[]',
    metadata           TEXT NOT NULL DEFAULT '{}',
    parent_id          TEXT,
    root_id            TEXT NOT NULL,
    idempotency_key    TEXT,
    version            TEXT,
    created_at         REAL NOT NULL,
    started_at         REAL,
    finished_at        REAL,
    -- when a delayed, retrying or waiting run may be claimed (queued: its trigger time)
    due_at             REAL NOT NULL,
    ttl_expires_at     REAL,
    -- the claim: a fresh token per claim fences every write of the holder
    lease_token        TEXT,
    lease_worker       TEXT,
    cancel_requested_at REAL,
    -- executing time of the current attempt before its last suspension (max_duration)
    executed_seconds   REAL NOT NULL DEFAULT 0
);

-- The claim path reads only runnable runs: finished runs never slow it.
CREATE INDEX runs_runnable ON runs (priority DESC, due_at)
    WHERE status IN ('queued', 'delayed', 'retrying', 'waiting');
CREATE INDEX runs_running ON runs (queue, concurrency_key)
    WHERE status = 'running';
CREATE INDEX runs_ttl ON runs (ttl_expires_at)
    WHERE status IN ('queued', 'delayed') AND ttl_expires_at IS NOT NULL;
CREATE INDEX runs_by_worker ON runs (lease_worker) WHERE status = 'running';
CREATE INDEX runs_created ON runs (created_at DESC, id DESC);
CREATE INDEX runs_task ON runs (task_id, created_at DESC);
CREATE INDEX runs_parent ON runs (parent_id) WHERE parent_id IS NOT NULL;

-- A key held by a run (non-terminal or completed) until expires_at.
CREATE TABLE idempotency_keys (
    task_id    TEXT NOT NULL,
    key        TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (task_id, key)
);

CREATE TABLE journal (
    ord         INTEGER PRIMARY KEY AUTOINCREMENT,  -- commit order, for forks
    run_id      TEXT NOT NULL,
    branch      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    sub         TEXT NOT NULL DEFAULT '',
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    result      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    wake_at     REAL,
    started_at  REAL,
    finished_at REAL,
    attempt     INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX journal_key ON journal (run_id, branch, seq, sub);

CREATE TABLE logs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    branch   TEXT,
    seq      INTEGER,
    level    TEXT NOT NULL,
    message  TEXT NOT NULL,
    at       REAL NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);

-- Every status transition, for the trace and the audit log.
CREATE TABLE run_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    at          REAL NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT,
    detail      TEXT
);
CREATE INDEX run_events_run ON run_events (run_id, id);

CREATE TABLE queues (
    name              TEXT PRIMARY KEY,
    concurrency_limit INTEGER
);

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT,
    concurrency  INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at   REAL,
    dead_at      REAL
);
CREATE INDEX workers_live ON workers (heartbeat_at) WHERE stopped_at IS NULL AND dead_at IS NULL;
