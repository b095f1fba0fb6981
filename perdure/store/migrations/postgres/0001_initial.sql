-- perdure schema, version 1 (PostgreSQL). Times are epoch seconds from the database clock.

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
    created_at         DOUBLE PRECISION NOT NULL,
    started_at         DOUBLE PRECISION,
    finished_at        DOUBLE PRECISION,
    -- when a delayed, retrying or waiting run may be claimed (queued: its trigger time)
    due_at             DOUBLE PRECISION NOT NULL,
    ttl_expires_at     DOUBLE PRECISION,
    -- the claim: a fresh token per claim fences every write of the holder
    lease_token        TEXT,
    lease_worker       TEXT,
    cancel_requested_at DOUBLE PRECISION,
    -- executing time of the current attempt before its last suspension (max_duration)
    executed_seconds   DOUBLE PRECISION NOT NULL DEFAULT 0
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
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (task_id, key)
);

CREATE TABLE journal (
    ord         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- commit order, for forks
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
    wake_at     DOUBLE PRECISION,
    started_at  DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    attempt     INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX journal_key ON journal (run_id, branch, seq, sub);

CREATE TABLE logs (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    branch   TEXT,
    seq      INTEGER,
    level    TEXT NOT NULL,
    message  TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);

-- Every status transition, for the trace and the audit log.
CREATE TABLE run_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
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
    started_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    stopped_at   DOUBLE PRECISION,
    dead_at      DOUBLE PRECISION
);
CREATE INDEX workers_live ON workers (heartbeat_at) WHERE stopped_at IS NULL AND dead_at IS NULL;
