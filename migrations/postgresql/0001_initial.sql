-- The same tables as ../0001_initial.sql (SQLite), in PostgreSQL's types. Identity columns
-- come from sequences, which never hand out an id twice: stale buttons must not hit new rows.
CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform TEXT NOT NULL,
    platform_user_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (platform, platform_user_id)
);

CREATE TABLE suggestions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL,
    embedding BYTEA NOT NULL,
    shown TEXT NOT NULL,
    platform TEXT NOT NULL,
    chat_id TEXT,
    message_id TEXT
);
CREATE INDEX suggestions_by_user ON suggestions (user_id, created_at);
CREATE UNIQUE INDEX suggestions_by_reply ON suggestions (platform, chat_id, message_id);

CREATE TABLE feedback (
    suggestion_id BIGINT NOT NULL REFERENCES suggestions (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    source TEXT NOT NULL,
    verdict INTEGER NOT NULL CHECK (verdict IN (-1, 1)),
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (suggestion_id, tag, source)
);
CREATE INDEX feedback_by_user ON feedback (user_id, created_at);
CREATE INDEX feedback_by_time ON feedback (created_at);
