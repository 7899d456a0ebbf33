"""What the store hands out, whichever database is behind it."""

from __future__ import annotations

import datetime
import json
import math
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


class DamagedRow(ValueError):
    """A stored row that this code cannot read back; the message names the row."""


@dataclass(frozen=True)
class PersonSettings:
    """What a person chose for themselves; None: not chosen (the bot's default applies)."""

    tag_count: int | None = None
    language: str | None = None
    hidden: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ShownEntry:
    """One hashtag a suggestion showed, as `suggestions.shown` stores it.

    The two logits (the model's own, and the full-strength personalised one) are what
    bot.core.trust judges personalisation by; suggestions stored before trust existed lack them.
    """

    tag: str
    score: float
    model_logit: float | None = None
    personal_logit: float | None = None


def encode_shown(entries: list[ShownEntry]) -> str:
    """`suggestions.shown`: a JSON list of `[tag, score]` or `[tag, score, model, personal]`."""
    rows = []
    for entry in entries:
        row: list = [entry.tag, round(float(entry.score), 4)]
        if entry.model_logit is not None and entry.personal_logit is not None:
            row += [round(float(entry.model_logit), 3), round(float(entry.personal_logit), 3)]
        rows.append(row)
    return json.dumps(rows)


def decode_shown(text: str, suggestion_id: int) -> list[ShownEntry]:
    """The one reader of `suggestions.shown`: every reader goes through it, so a change of the
    stored format breaks loudly here, with the row named, instead of silently in one reader."""
    try:
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise TypeError("not a list")
        entries = []
        for row in rows:
            if not isinstance(row, list) or len(row) not in (2, 4) or not isinstance(row[0], str):
                raise TypeError(f"entry {row!r} is not [tag, score, (model, personal)]")
            numbers = [float(value) for value in row[1:]]
            if not all(math.isfinite(value) for value in numbers):
                raise TypeError(f"entry {row!r} holds a number that is not finite")
            entries.append(ShownEntry(row[0], *numbers))
    except (TypeError, ValueError, RecursionError) as error:  # deep nesting: RecursionError
        raise DamagedRow(
            f"suggestion {suggestion_id}: its shown hashtags are damaged ({error})"
        ) from None
    return entries


def decode_embedding(blob: bytes, suggestion_id: int) -> np.ndarray:
    """A stored float16 embedding as float32; a damaged one names its row."""
    if not isinstance(blob, bytes | bytearray | memoryview) or len(blob) % 2 or not blob:
        raise DamagedRow(f"suggestion {suggestion_id}: its embedding is damaged (not float16)")
    vector = np.frombuffer(bytes(blob), dtype=np.float16).astype(np.float32)
    if not np.isfinite(vector).all():
        raise DamagedRow(f"suggestion {suggestion_id}: its embedding holds NaN or infinity")
    return vector


def decode_time(value: object, suggestion_id: int) -> float:
    """A stored unix time. Learning counts a person's answers by UTC day, so a time no calendar
    holds (text, infinity, NaN, the year 30 million) is a damaged row, not a crash later on."""
    try:
        seconds = float(value)
        datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise DamagedRow(
            f"suggestion {suggestion_id}: its time is damaged ({value!r:.40})"
        ) from None
    return seconds


@dataclass(frozen=True)
class StoredSuggestion:
    id: int
    user_id: int
    platform: str
    shown: list[ShownEntry]
    chat_id: str | None
    message_id: str | None
    created_at: float
    model_version: str

    @property
    def shown_tags(self) -> list[str]:
        return [entry.tag for entry in self.shown]


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

    suggestion_id: int
    user_id: int
    created_at: float
    embedding: np.ndarray  # (dim,) float32
    shown: list[str]  # the tags the bot showed, best first
    verdicts: dict[str, int]  # tag -> +1 / -1, the latest verdict when several sources spoke


@dataclass
class AnsweredPhotos:
    """What learning reads: the answered photos one encoder made, and what was left out."""

    photos: list[AnsweredPhoto]  # oldest first
    other_encoder: int  # answered photos another (or an unknown) encoder made
    damaged: list[str]  # one line per row that could not be read, naming it
