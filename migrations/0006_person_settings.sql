-- Each person's own settings (/count, /language) and the hashtags they hid (/hide). Both go
-- with the person: /forget deletes the users row, and these by cascade.
CREATE TABLE person_settings (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tag_count INTEGER CHECK (tag_count BETWEEN 1 AND 30),  -- NULL: the operator's --top-k
    language TEXT                                           -- NULL: the person's app's language
);
CREATE TABLE hidden_tags (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (user_id, tag)
);
