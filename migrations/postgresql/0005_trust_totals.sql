-- As ../0005_trust_totals.sql: everyone's personalisation record as a running total.
CREATE TABLE trust_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    wins BIGINT NOT NULL,
    losses BIGINT NOT NULL
);
INSERT INTO trust_totals (id, wins, losses)
SELECT 1,
       COALESCE(SUM(CASE WHEN personal_won > 0 THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN personal_won < 0 THEN 1 ELSE 0 END), 0)
FROM suggestions;
