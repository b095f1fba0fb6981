-- Delayed, retrying and waiting runs come due by due time: a claim finds them in an index
-- of their own, which holds no queued run (runs_due holds them all, for the ranking of
-- limited queues), so a long queued backlog costs it nothing there either.

CREATE INDEX runs_woken ON runs (due_at) WHERE status IN ('delayed', 'retrying', 'waiting');
