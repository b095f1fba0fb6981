-- A queued run is due from the moment it is queued: a claim takes queued runs in priority
-- order straight from this index and reads only as many as it takes, however long the
-- backlog (ranking them all by due time cost every claim a sort of the whole backlog).
-- Delayed, retrying and waiting runs it still finds by due time, in runs_due.

CREATE INDEX runs_queued ON runs (priority DESC, due_at, id) WHERE status = 'queued';
