-- Child runs: the journal entry of the parent that started them (and waits on them).

ALTER TABLE runs ADD COLUMN parent_branch TEXT;
ALTER TABLE runs ADD COLUMN parent_seq INTEGER;
ALTER TABLE runs ADD COLUMN batch_index INTEGER;

CREATE INDEX runs_parent_entry ON runs (parent_id, parent_branch, parent_seq, batch_index)
    WHERE parent_id IS NOT NULL;
