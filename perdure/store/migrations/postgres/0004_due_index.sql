-- Claims and the next wake-up look for runnable runs by due time: an index on it alone
-- makes "due now" a range scan, however many runs are parked until later (the index by
-- priority first had to be read whole to find them).

DROP INDEX runs_runnable;
CREATE INDEX runs_due ON runs (due_at)
    WHERE status IN ('queued', 'delayed', 'retrying', 'waiting');
