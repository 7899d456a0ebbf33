-- As ../0003_personal_won.sql: did the personalised order win on this answered photo?
ALTER TABLE suggestions ADD COLUMN personal_won INTEGER NOT NULL DEFAULT 0;
