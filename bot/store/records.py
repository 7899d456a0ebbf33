"""What the store hands out, whichever database is behind it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DB = "hashtag-bot.sqlite3"
VERDICT_ACCEPT, VERDICT_REJECT = 1, -1


def default_db_path() -> str:
    """`--db` when not given: $HASHTAG_DB, else hashtag-bot.sqlite3 here (bot and finetune).

    Either a SQLite file path or a PostgreSQL URL (postgresql://user@host/db).
    """
    return os.environ.get("HASHTAG_DB", DEFAULT_DB)


def is_postgres_url(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


class StoreUnavailable(RuntimeError):
    """The database cannot take the write right now; the message says what happened."""


@dataclass(frozen=True)
class StoredSuggestion:
    id: int
    user_id: int
    platform: str
    shown: list[tuple[str, float]]
    chat_id: str | None
    message_id: str | None
    created_at: float
    model_version: str

    @property
    def shown_tags(self) -> list[str]:
        return [tag for tag, _ in self.shown]


@dataclass
class UserHistory:
    """A user's photos that have feedback, with the verdict that counts for each tag.

    When several sources spoke about one tag of one photo (a button, then a reaction), the
    latest one counts.
    """

    photo_times: np.ndarray  # (photos,) unix seconds
    embeddings: np.ndarray  # (photos, dim) float32
    verdicts: list[dict[str, int]]  # per photo: tag -> +1 / -1
    photo_ids: list[int] | None = None  # the suggestion ids (None: numbered from 0)
    evidence: list[int] | None = None  # per photo: did personalisation win? (bot.core.trust)

    @property
    def photos(self) -> int:
        return len(self.photo_times)


@dataclass
class AnsweredPhoto:
    """One suggestion somebody answered: what learning from feedback trains on."""

    user_id: int
    created_at: float
    embedding: np.ndarray  # (dim,) float32
    shown: list[str]  # the tags the bot showed, best first
    verdicts: dict[str, int]  # tag -> +1 / -1, the latest verdict when several sources spoke
