-- Per answered suggestion: did the personalised order rank the accepted hashtags higher (+1)
-- or lower (-1) than the model's own order, among those shown (bot/trust.py)? 0: no verdict,
-- or no difference. Kept up to date with every answer; summed per person and for everyone.
ALTER TABLE suggestions ADD COLUMN personal_won INTEGER NOT NULL DEFAULT 0;
