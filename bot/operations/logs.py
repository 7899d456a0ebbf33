"""Logging for the bot: one line per event, and secrets never reach the output.

Telegram puts the bot token in every request URL (file downloads included), and HTTP clients
like to log URLs. Rather than trusting every library, the one handler redacts the tokens from
each formatted line, tracebacks included.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

REDACTED = "[redacted]"


class RedactingFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str], fmt: str):
        super().__init__(fmt)
        self.secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return line


def configure_logging(secrets: Iterable[str], level: str | None = None) -> None:
    """Root logging at $LOG_LEVEL (default INFO) through a token-redacting formatter."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        RedactingFormatter(secrets, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(
        level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(),
        handlers=[handler],
        force=True,
    )
    # Per-request lines from the HTTP client are noise at INFO (and carry URLs).
    logging.getLogger("httpx").setLevel(logging.WARNING)
