-- Tokens: waitpoints completed from outside (API, webhook URL, CLI): human approval.

CREATE TABLE tokens (
    id              TEXT PRIMARY KEY,
    run_id          TEXT,
    status          TEXT NOT NULL,
    data            TEXT,
    timeout_at      DOUBLE PRECISION,
    tags            TEXT NOT NULL DEFAULT '[]',
    idempotency_key TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    completed_at    DOUBLE PRECISION
);
CREATE UNIQUE INDEX tokens_idempotency ON tokens (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tokens_run ON tokens (run_id, status);
CREATE INDEX tokens_created ON tokens (created_at DESC, id DESC);

-- Waits on a token are journal entries of kind 'wait' named after the token.
CREATE INDEX journal_waits ON journal (name, status) WHERE kind = 'wait';
