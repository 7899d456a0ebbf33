-- Everyone's record of where personalisation won or lost (bot/core/trust.py), as a running
-- total: every answer that changes a photo's personal_won moves it, /forget takes a person's
-- photos out of it. Before, it was summed over every suggestion every few minutes.
CREATE TABLE trust_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    wins INTEGER NOT NULL,
    losses INTEGER NOT NULL
);
INSERT INTO trust_totals (id, wins, losses)
SELECT 1,
       COALESCE(SUM(CASE WHEN personal_won > 0 THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN personal_won < 0 THEN 1 ELSE 0 END), 0)
FROM suggestions;
