"""Logging for the bot: one line per event, and secrets never reach the output.

Telegram puts the bot token in every request URL (file downloads included), and HTTP clients
like to log URLs; a library's exception may quote the token it was given. Rather than trusting
every library, the process's stdout and stderr themselves redact the secrets: log lines,
tracebacks (a crash at start included), warnings and progress bars all pass through them.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterable
from typing import TextIO

REDACTED = "[redacted]"


class RedactingStream(io.TextIOBase):
    """A text stream that writes everything through to `stream`, the secrets replaced.

    Python writes a traceback line by line and `print` writes its text in one call, so a
    secret never arrives split over two writes.
    """

    def __init__(self, stream: TextIO, secrets: Iterable[str]):
        self.stream = stream
        self.secrets = [secret for secret in secrets if secret]

    def write(self, text: str) -> int:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


def hide_secrets(secrets: Iterable[str]) -> None:
    """From now on, nothing this process prints to stdout or stderr shows `secrets`."""
    secrets = list(secrets)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, RedactingStream):
            stream = stream.stream
        setattr(sys, name, RedactingStream(stream, secrets))


def configure_logging(secrets: Iterable[str], level: str | None = None) -> None:
    """Root logging at $LOG_LEVEL (default INFO) on a redacted stderr; Python's warnings
    become log lines too."""
    hide_secrets(secrets)
    handler = logging.StreamHandler()  # on sys.stderr, now redacting
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(),
        handlers=[handler],
        force=True,
    )
    logging.captureWarnings(True)
    # Per-request lines from the HTTP client are noise at INFO (and carry URLs).
    logging.getLogger("httpx").setLevel(logging.WARNING)
