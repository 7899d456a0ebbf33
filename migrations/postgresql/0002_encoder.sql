-- As ../0002_encoder.sql: which image encoder made each stored embedding.
ALTER TABLE suggestions ADD COLUMN encoder TEXT;
CREATE INDEX suggestions_by_encoder ON suggestions (encoder, created_at);
