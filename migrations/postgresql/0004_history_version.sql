-- As ../0004_history_version.sql: counts every change to a person's answers.
ALTER TABLE users ADD COLUMN history_version BIGINT NOT NULL DEFAULT 0;
