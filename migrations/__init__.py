"""Numbered SQL migrations for the bot's SQLite database, applied in order at start-up."""
