-- People, keyed by platform and the platform's own user id.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: stale buttons must not hit new rows
    platform TEXT NOT NULL,
    platform_user_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (platform, platform_user_id)
);

-- One row per photo the bot answered. The image itself is never stored: only its embedding
-- (float16, L2-normalised) for "photos like this one", and what the bot suggested.
CREATE TABLE suggestions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: stale buttons must not hit new rows
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    model_version TEXT NOT NULL,
    embedding BLOB NOT NULL,
    shown TEXT NOT NULL,           -- JSON: [[tag, score], ...] best first
    platform TEXT NOT NULL,
    chat_id TEXT,                  -- where the bot's reply is, once it is sent
    message_id TEXT
);
CREATE INDEX suggestions_by_user ON suggestions (user_id, created_at);
CREATE UNIQUE INDEX suggestions_by_reply ON suggestions (platform, chat_id, message_id);

-- What a person said about a tag on one photo: +1 accepted, -1 rejected. One row per
-- (photo, tag, source), so the same reaction twice counts once and removing it can be undone
-- without touching what a button press or a typed reply said.
CREATE TABLE feedback (
    suggestion_id INTEGER NOT NULL REFERENCES suggestions (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    source TEXT NOT NULL,          -- reaction | button | typed | caption
    verdict INTEGER NOT NULL CHECK (verdict IN (-1, 1)),
    created_at REAL NOT NULL,
    PRIMARY KEY (suggestion_id, tag, source)
);
CREATE INDEX feedback_by_user ON feedback (user_id, created_at);
CREATE INDEX feedback_by_time ON feedback (created_at);
