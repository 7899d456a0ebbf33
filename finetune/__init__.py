"""Fine-tuning the hashtag model on HARRISON or your own photos."""
