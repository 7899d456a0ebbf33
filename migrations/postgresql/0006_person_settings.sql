-- As ../0006_person_settings.sql: each person's /count, /language and /hide.
CREATE TABLE person_settings (
    user_id BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tag_count INTEGER CHECK (tag_count BETWEEN 1 AND 30),
    language TEXT
);
CREATE TABLE hidden_tags (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, tag)
);
