"""The bot's SQLite store: users, the suggestions it made, and what people said about them.

Durability rules:
- WAL journal, `synchronous=FULL`: once a write returns, it survives a `kill -9` or a crash.
  Callers acknowledge feedback to a person only after the write returned.
- Every write is one explicit transaction behind an asyncio lock, so concurrent coroutines
  sharing the connection never interleave half-transactions.
- "database is locked" and "disk is full" become `StoreUnavailable` with a message to show.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import numpy as np

from bot.schema import migrate
from bot.trust import personal_order_won

BUSY_TIMEOUT_MS = 5000
DEFAULT_DB = "hashtag-bot.sqlite3"
VERDICT_ACCEPT, VERDICT_REJECT = 1, -1


def default_db_path() -> Path:
    """`--db` when not given: $HASHTAG_DB, else hashtag-bot.sqlite3 here (bot and finetune)."""
    return Path(os.environ.get("HASHTAG_DB", DEFAULT_DB))


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
    evidence: list[int] | None = None  # per photo: did personalisation win? (bot.trust)

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


class Store:
    def __init__(self, connection: aiosqlite.Connection):
        self._db = connection
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Store:
        """Open (creating if needed) and migrate the database at `path`.

        `busy_timeout_ms`: how long a write waits for another process's lock before giving up.
        """
        connection = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            for pragma in (
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
                "PRAGMA foreign_keys = ON",
            ):
                await connection.execute(pragma)
            await migrate(connection)
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def close(self) -> None:
        async with self._write_lock:
            await self._db.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock, _unavailable_on_sqlite_errors():
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk, for one).
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise

    async def check_writable(self) -> None:
        """Take the write lock and let it go: raises StoreUnavailable when no write could."""
        async with self._transaction():
            pass

    async def find_user_id(self, platform: str, platform_user_id: str) -> int | None:
        """The internal id of a person, or None for someone the bot has never answered."""
        async with _unavailable_on_sqlite_errors():
            cursor = await self._db.execute(
                "SELECT id FROM users WHERE platform = ? AND platform_user_id = ?",
                (platform, platform_user_id),
            )
            row = await cursor.fetchone()
        return row[0] if row else None

    async def user_id(self, platform: str, platform_user_id: str) -> int:
        """The internal id of a person, created on first sight.

        Looked up first: a write (an fsync) only for someone new.
        """
        if (known := await self.find_user_id(platform, platform_user_id)) is not None:
            return known
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO users (platform, platform_user_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (platform, platform_user_id) DO NOTHING",
                (platform, platform_user_id, time.time()),
            )
            return await _scalar(
                db,
                "SELECT id FROM users WHERE platform = ? AND platform_user_id = ?",
                (platform, platform_user_id),
            )

    async def add_suggestion(
        self,
        user_id: int,
        platform: str,
        embedding: np.ndarray,
        shown: list[tuple[str, float]] | list[list],
        model_version: str,
        encoder: str | None = None,
    ) -> int:
        """`shown`: (tag, score), or Ranking.shown's entries with the logits bot.trust needs."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO suggestions (user_id, created_at, model_version, embedding, shown, "
                "platform, encoder) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    time.time(),
                    model_version,
                    np.asarray(embedding, dtype=np.float16).tobytes(),
                    json.dumps(
                        [[entry[0], round(float(entry[1]), 4), *entry[2:]] for entry in shown]
                    ),
                    platform,
                    encoder,
                ),
            )
            return cursor.lastrowid

    async def attach_reply(self, suggestion_id: int, chat_id: str, message_id: str) -> None:
        """Remember which bot message carries a suggestion, so reactions to it can find it."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE suggestions SET chat_id = ?, message_id = ? WHERE id = ?",
                (chat_id, message_id, suggestion_id),
            )

    async def suggestion(self, suggestion_id: int) -> StoredSuggestion | None:
        return await self._one_suggestion("id = ?", (suggestion_id,))

    async def suggestion_for_reply(
        self, platform: str, chat_id: str, message_id: str
    ) -> StoredSuggestion | None:
        return await self._one_suggestion(
            "platform = ? AND chat_id = ? AND message_id = ?", (platform, chat_id, message_id)
        )

    async def _one_suggestion(self, where: str, parameters: tuple) -> StoredSuggestion | None:
        async with _unavailable_on_sqlite_errors():
            cursor = await self._db.execute(
                "SELECT id, user_id, platform, shown, chat_id, message_id, created_at, "
                f"model_version FROM suggestions WHERE {where}",
                parameters,
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        shown = [(tag, score) for tag, score, *_ in json.loads(row[3])]
        return StoredSuggestion(row[0], row[1], row[2], shown, row[4], row[5], row[6], row[7])

    async def record_feedback(
        self, suggestion_id: int, user_id: int, tags: Iterable[str], verdict: int, source: str
    ) -> list[str]:
        """Upsert one verdict per tag: the same reaction twice counts once.

        Returns the tags that had no such verdict from any source before (what the quality
        metrics count, so a 👍 after a button press is not counted twice).
        """
        now = time.time()
        tags = list(dict.fromkeys(tags))
        rows = [(suggestion_id, user_id, tag, source, verdict, now) for tag in tags]
        async with self._transaction() as db:
            cursor = await db.execute(
                "SELECT tag FROM feedback WHERE suggestion_id = ? AND verdict = ?",
                (suggestion_id, verdict),
            )
            before = {row[0] for row in await cursor.fetchall()}
            await db.executemany(
                "INSERT INTO feedback (suggestion_id, user_id, tag, source, verdict, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (suggestion_id, tag, source) "
                "DO UPDATE SET verdict = excluded.verdict, created_at = excluded.created_at",
                rows,
            )
            await _judge_personalisation(db, suggestion_id)
        return [tag for tag in tags if tag not in before]

    async def remove_feedback(
        self, suggestion_id: int, source: str, verdict: int | None = None
    ) -> int:
        """Undo what one source said about a photo (e.g. a removed reaction)."""
        query = "DELETE FROM feedback WHERE suggestion_id = ? AND source = ?"
        parameters: tuple = (suggestion_id, source)
        if verdict is not None:
            query += " AND verdict = ?"
            parameters += (verdict,)
        async with self._transaction() as db:
            cursor = await db.execute(query, parameters)
            await _judge_personalisation(db, suggestion_id)
            return cursor.rowcount

    async def user_history(self, user_id: int, suggestion_id: int | None = None) -> UserHistory:
        """The person's answered photos; with `suggestion_id`, only that one (if answered)."""
        only_one = " AND f.suggestion_id = ?" if suggestion_id is not None else ""
        async with _unavailable_on_sqlite_errors():
            cursor = await self._db.execute(
                "SELECT f.suggestion_id, f.tag, f.verdict, s.created_at, s.embedding, "
                "s.personal_won FROM feedback f JOIN suggestions s ON s.id = f.suggestion_id "
                f"WHERE f.user_id = ?{only_one} ORDER BY f.suggestion_id, f.created_at",
                (user_id,) if suggestion_id is None else (user_id, suggestion_id),
            )
            rows = await cursor.fetchall()
        photos: dict[int, tuple[float, bytes, dict[str, int], int]] = {}
        for suggestion_id, tag, verdict, created_at, embedding, won in rows:
            photo = photos.setdefault(suggestion_id, (created_at, embedding, {}, won))
            photo[2][tag] = verdict  # rows come oldest first: the latest verdict wins
        times = np.array([p[0] for p in photos.values()], dtype=np.float64)
        vectors = [np.frombuffer(p[1], dtype=np.float16) for p in photos.values()]
        embeddings = (
            np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), np.float32)
        )
        return UserHistory(
            times,
            embeddings,
            [p[2] for p in photos.values()],
            list(photos),
            [p[3] for p in photos.values()],
        )

    async def personalisation_record(self) -> tuple[int, int]:
        """Everyone's answered photos where personalisation won, and where it lost."""
        async with _unavailable_on_sqlite_errors():
            cursor = await self._db.execute(
                "SELECT COALESCE(SUM(personal_won > 0), 0), COALESCE(SUM(personal_won < 0), 0) "
                "FROM suggestions"
            )
            wins, losses = await cursor.fetchone()
        return wins, losses

    async def accepted_tag_counts(self, since: float | None = None) -> tuple[dict[str, int], int]:
        """Everyone's accepted tags (optionally since a time): per-tag photo counts, and photos."""
        condition = "verdict = 1" + (" AND created_at >= ?" if since is not None else "")
        parameters = (since,) if since is not None else ()
        async with _unavailable_on_sqlite_errors():
            cursor = await self._db.execute(
                f"SELECT tag, COUNT(DISTINCT suggestion_id) FROM feedback WHERE {condition} "
                "GROUP BY tag",
                parameters,
            )
            counts = dict(await cursor.fetchall())
            photos = await _scalar(
                self._db,
                f"SELECT COUNT(DISTINCT suggestion_id) FROM feedback WHERE {condition}",
                parameters,
            )
        return counts, photos

    async def answered_photos(self, encoder: str) -> tuple[list[AnsweredPhoto], int]:
        """Every answered suggestion whose embedding `encoder` made, oldest first, and how many
        answered suggestions were skipped because another (or an unknown) encoder made them."""
        async with _unavailable_on_sqlite_errors():
            cursor = await self._db.execute(
                "SELECT id, user_id, created_at, embedding, shown FROM suggestions "
                "WHERE encoder = ? AND id IN (SELECT suggestion_id FROM feedback) "
                "ORDER BY created_at, id",
                (encoder,),
            )
            suggestions = await cursor.fetchall()
            cursor = await self._db.execute(
                "SELECT f.suggestion_id, f.tag, f.verdict FROM feedback f "
                "JOIN suggestions s ON s.id = f.suggestion_id WHERE s.encoder = ? "
                "ORDER BY f.suggestion_id, f.created_at",
                (encoder,),
            )
            verdicts: dict[int, dict[str, int]] = {}
            for suggestion_id, tag, verdict in await cursor.fetchall():
                verdicts.setdefault(suggestion_id, {})[tag] = verdict  # the latest wins
            skipped = await _scalar(
                self._db,
                "SELECT COUNT(*) FROM suggestions WHERE encoder IS NOT ? "
                "AND id IN (SELECT suggestion_id FROM feedback)",
                (encoder,),
            )
        photos = [
            AnsweredPhoto(
                user_id=user_id,
                created_at=created_at,
                embedding=np.frombuffer(embedding, dtype=np.float16).astype(np.float32),
                shown=[tag for tag, _ in json.loads(shown)],
                verdicts=verdicts[suggestion_id],
            )
            for suggestion_id, user_id, created_at, embedding, shown in suggestions
        ]
        return photos, skipped

    async def forget_user(self, user_id: int) -> None:
        """Delete the person and, by cascade, every suggestion and verdict of theirs."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM users WHERE id = ?", (user_id,))


async def _judge_personalisation(db: aiosqlite.Connection, suggestion_id: int) -> None:
    """Keep suggestions.personal_won in step with the answers on one photo (bot/trust.py)."""
    shown = json.loads(
        await _scalar(db, "SELECT shown FROM suggestions WHERE id = ?", (suggestion_id,))
    )
    cursor = await db.execute(
        "SELECT tag, verdict FROM feedback WHERE suggestion_id = ? ORDER BY created_at",
        (suggestion_id,),
    )
    verdicts = dict(await cursor.fetchall())  # the latest verdict per tag wins
    await db.execute(
        "UPDATE suggestions SET personal_won = ? WHERE id = ?",
        (personal_order_won(shown, verdicts), suggestion_id),
    )


async def _scalar(db: aiosqlite.Connection, query: str, parameters: tuple = ()):
    cursor = await db.execute(query, parameters)
    row = await cursor.fetchone()
    return row[0]


@asynccontextmanager
async def _unavailable_on_sqlite_errors() -> AsyncIterator[None]:
    try:
        yield
    except sqlite3.OperationalError as error:
        message = str(error).lower()
        if "locked" in message or "busy" in message:
            raise StoreUnavailable(
                "The database is busy right now; please try again in a moment."
            ) from error
        if "full" in message:
            raise StoreUnavailable(
                "The server's disk is full, so nothing can be saved; the operator must free space."
            ) from error
        if "disk i/o" in message or "readonly" in message or "read-only" in message:
            raise StoreUnavailable(f"The database cannot be written ({error}).") from error
        raise
