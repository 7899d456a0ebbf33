-- Which image encoder made each stored embedding (inference.model.encoder_fingerprint), so
-- learning from feedback uses only embeddings that the encoder in use would make again.
-- Suggestions stored before this column existed have NULL: their encoder is unknown.
ALTER TABLE suggestions ADD COLUMN encoder TEXT;
CREATE INDEX suggestions_by_encoder ON suggestions (encoder, created_at);
