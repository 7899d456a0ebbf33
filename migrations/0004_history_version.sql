-- Counts every change to a person's answers, so a process that caches their profile can tell
-- with one primary-key read whether another process (sharing this database) changed it.
ALTER TABLE users ADD COLUMN history_version INTEGER NOT NULL DEFAULT 0;
