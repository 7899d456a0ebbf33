"""The operator's veto: hashtags never suggested to anyone, never shared, never trending.

A small default list ships with the package (bot/data/blocked_hashtags.txt); `--blocked-hashtags
FILE` (or $HASHTAG_BLOCKED_HASHTAGS) replaces it. A running bot notices when the file changes,
so `python -m finetune community block TAG` takes effect without a restart.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

from inference.vocab import normalize_hashtag

ENVIRONMENT_VARIABLE = "HASHTAG_BLOCKED_HASHTAGS"
MAX_FILE_BYTES = 1 << 20
# How often a running bot looks at the file's modification time (a stat call).
RECHECK_SECONDS = 10.0


class BlockListError(ValueError):
    """A block list that cannot be read, with what to fix."""


def default_block_list_text() -> str:
    return resources.files("bot").joinpath("data", "blocked_hashtags.txt").read_text("utf-8")


def parse_block_list(text: str) -> frozenset[str]:
    """One hashtag per line, '#' optional; a line starting with '# ' (or only '#') is a comment."""
    tags = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line == "#" or line.startswith("# "):
            continue
        if tag := normalize_hashtag(line.split()[0]):
            tags.add(tag)
    return frozenset(tags)


def read_block_list(path: Path) -> frozenset[str]:
    try:
        data = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except FileNotFoundError:
        raise BlockListError(f"block list {path} does not exist") from None
    except OSError as error:
        raise BlockListError(f"cannot read block list {path}: {error.strerror}") from None
    if len(data) > MAX_FILE_BYTES or b"\0" in data:
        raise BlockListError(
            f"block list {path} is not a text file of hashtags (one per line, at most 1 MB)"
        )
    try:
        return parse_block_list(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BlockListError(f"block list {path} is not UTF-8 text: one hashtag per line") from None


def configured_block_list_path(given: Path | None = None) -> Path | None:
    """`--blocked-hashtags`, else $HASHTAG_BLOCKED_HASHTAGS, else None (the default list)."""
    if given is not None:
        return given
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    return Path(configured) if configured else None


class BlockList:
    """The hashtags blocked now: the file's, re-read when it changes, or the default list."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._tags = read_block_list(path) if path else parse_block_list(default_block_list_text())
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def __contains__(self, tag: str) -> bool:
        return tag in self.tags

    @property
    def tags(self) -> frozenset[str]:
        """Re-read when the file changed (looked at every RECHECK_SECONDS). A file that became
        unreadable keeps the last good list: the veto never silently lapses."""
        if self.path and time.monotonic() - self._checked >= RECHECK_SECONDS:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp != self._stamp:
                try:
                    self._tags = read_block_list(self.path)
                    self._stamp = stamp
                except BlockListError:
                    pass
        return self._tags

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = self.path.stat() if self.path else None
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size) if status else None


def add_to_block_list(path: Path, tag: str) -> bool:
    """Append one hashtag to the file (created holding the default list, so blocking one more
    never unblocks the defaults); False when it was blocked already."""
    tag = normalize_hashtag(tag)
    if not tag:
        raise BlockListError("give a hashtag to block, e.g. `block spamtag`")
    if path.exists():
        if tag in read_block_list(path):
            return False
        text = path.read_text(encoding="utf-8")
        prefix = "" if not text or text.endswith("\n") else "\n"
    else:
        if tag in parse_block_list(default_block_list_text()):
            return False
        prefix = default_block_list_text()
    with path.open("a", encoding="utf-8") as file:
        file.write(f"{prefix}{tag}\n")
    return True
