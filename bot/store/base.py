"""The store's one interface, with every query written once for both databases.

The queries are portable SQL with `?` placeholders; a back end supplies connections that run
them (`bot/store/sqlite.py`, `bot/store/postgres.py`), its transactions and its error mapping.
Each write is one transaction: once a method returns, what it wrote is committed, so callers
acknowledge feedback to a person only after the write returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bot.core.trust import personal_order_won
from bot.store.health import StoreHealth
from bot.store.records import (
    AnsweredPhoto,
    AnsweredPhotos,
    DamagedRow,
    PersonSettings,
    ShownEntry,
    StoredSuggestion,
    UserHistory,
    decode_embedding,
    decode_shown,
    decode_time,
    encode_shown,
    is_postgres_url,
)

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What the queries need of a database connection; `?` marks each parameter."""

    async def fetch(self, query: str, *parameters: Any) -> Sequence[Sequence[Any]]: ...

    async def execute(self, query: str, *parameters: Any) -> int:
        """Runs one statement; returns the number of rows it changed."""
        ...

    async def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Store(ABC):
    health: StoreHealth  # how its transactions ended, for /healthz (each back end sets it)

    @staticmethod
    async def open(location: str | Path, **options: Any) -> Store:
        """A SQLite file path, or a PostgreSQL URL (`postgresql://user@host/db`, or
        `postgresql://user@/db?host=/run/postgresql` for a unix socket); migrated on opening."""
        if is_postgres_url(location):
            from bot.store.postgres import PostgresStore

            return await PostgresStore.connect(str(location), **options)
        from bot.store.sqlite import SqliteStore

        return await SqliteStore.connect(location, **options)

    @abstractmethod
    def _reading(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads, mapping the database's errors to StoreUnavailable."""

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Connection]:
        """One write transaction: committed on leaving, rolled back on an error."""

    @abstractmethod
    async def close(self) -> None: ...

    async def check_writable(self) -> None:
        """Start a write transaction and end it: raises StoreUnavailable when no write could."""
        async with self._transaction():
            pass

    async def find_user_id(self, platform: str, platform_user_id: str) -> int | None:
        """The internal id of a person, or None for someone the bot has never answered."""
        async with self._reading() as db:
            rows = await db.fetch(
                "SELECT id FROM users WHERE platform = ? AND platform_user_id = ?",
                platform,
                platform_user_id,
            )
        return rows[0][0] if rows else None

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
                platform,
                platform_user_id,
                time.time(),
            )
            rows = await db.fetch(
                "SELECT id FROM users WHERE platform = ? AND platform_user_id = ?",
                platform,
                platform_user_id,
            )
        return rows[0][0]

    async def history_version(self, user_id: int) -> int:
        """Counts every change to the person's answers, from any process on this database."""
        async with self._reading() as db:
            rows = await db.fetch("SELECT history_version FROM users WHERE id = ?", user_id)
        return rows[0][0] if rows else 0

    async def add_suggestion(
        self,
        user_id: int,
        platform: str,
        embedding: np.ndarray,
        shown: Sequence[ShownEntry],
        model_version: str,
        encoder: str | None = None,
    ) -> int:
        """`shown`: Ranking.shown's entries, with the logits that bot.core.trust needs."""
        async with self._transaction() as db:
            rows = await db.fetch(
                "INSERT INTO suggestions (user_id, created_at, model_version, embedding, shown, "
                "platform, encoder) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                user_id,
                time.time(),
                model_version,
                np.asarray(embedding, dtype=np.float16).tobytes(),
                encode_shown(list(shown)),
                platform,
                encoder,
            )
        return rows[0][0]

    async def attach_reply(self, suggestion_id: int, chat_id: str, message_id: str) -> None:
        """Remember which bot message carries a suggestion, so reactions to it can find it."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE suggestions SET chat_id = ?, message_id = ? WHERE id = ?",
                chat_id,
                message_id,
                suggestion_id,
            )

    async def suggestion(self, suggestion_id: int) -> StoredSuggestion | None:
        return await self._one_suggestion("id = ?", suggestion_id)

    async def suggestion_for_reply(
        self, platform: str, chat_id: str, message_id: str
    ) -> StoredSuggestion | None:
        return await self._one_suggestion(
            "platform = ? AND chat_id = ? AND message_id = ?", platform, chat_id, message_id
        )

    async def _one_suggestion(self, where: str, *parameters: Any) -> StoredSuggestion | None:
        async with self._reading() as db:
            rows = await db.fetch(
                "SELECT id, user_id, platform, shown, chat_id, message_id, created_at, "
                f"model_version FROM suggestions WHERE {where}",
                *parameters,
            )
        if not rows:
            return None
        row = rows[0]
        shown = decode_shown(row[3], row[0])
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
            before = {
                row[0]
                for row in await db.fetch(
                    "SELECT tag FROM feedback WHERE suggestion_id = ? AND verdict = ?",
                    suggestion_id,
                    verdict,
                )
            }
            await db.executemany(
                "INSERT INTO feedback (suggestion_id, user_id, tag, source, verdict, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (suggestion_id, tag, source) "
                "DO UPDATE SET verdict = excluded.verdict, created_at = excluded.created_at",
                rows,
            )
            await _answers_changed(db, suggestion_id)
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
            removed = await db.execute(query, *parameters)
            await _answers_changed(db, suggestion_id)
        return removed

    async def has_feedback(self, suggestion_id: int, source: str) -> bool:
        """Whether anything from this source (e.g. a reaction) stands on the photo."""
        async with self._reading() as db:
            rows = await db.fetch(
                "SELECT 1 FROM feedback WHERE suggestion_id = ? AND source = ? LIMIT 1",
                suggestion_id,
                source,
            )
        return bool(rows)

    async def feedback_tags(self, suggestion_id: int, sources: Sequence[str]) -> set[str]:
        """The tags these sources (e.g. typed and caption) gave a verdict on, on one photo."""
        marks = ", ".join("?" * len(sources))
        async with self._reading() as db:
            rows = await db.fetch(
                "SELECT DISTINCT tag FROM feedback "
                f"WHERE suggestion_id = ? AND source IN ({marks})",
                suggestion_id,
                *sources,
            )
        return {row[0] for row in rows}

    async def user_history(self, user_id: int, suggestion_id: int | None = None) -> UserHistory:
        """The person's answered photos; with `suggestion_id`, only that one (if answered)."""
        only_one = " AND f.suggestion_id = ?" if suggestion_id is not None else ""
        async with self._reading() as db:
            rows = await db.fetch(
                "SELECT f.suggestion_id, f.tag, f.verdict, s.created_at, s.embedding, "
                "s.personal_won FROM feedback f JOIN suggestions s ON s.id = f.suggestion_id "
                f"WHERE f.user_id = ?{only_one} ORDER BY f.suggestion_id, f.created_at",
                *((user_id,) if suggestion_id is None else (user_id, suggestion_id)),
            )
        if suggestion_id is not None:  # one photo, after each answer: a few rows
            return _history_from_rows(rows)
        # Arranging a long history takes a while: not on the event loop.
        return await asyncio.to_thread(_history_from_rows, rows)

    async def personalisation_record(self) -> tuple[int, int]:
        """Everyone's answered photos where personalisation won, and where it lost: a running
        total that every answer and every /forget keeps in step (migration 0005)."""
        async with self._reading() as db:
            rows = await db.fetch("SELECT wins, losses FROM trust_totals WHERE id = 1")
        wins, losses = rows[0] if rows else (0, 0)
        return int(wins), int(losses)

    async def accepted_tag_counts(self, since: float | None = None) -> tuple[dict[str, int], int]:
        """Everyone's accepted tags (optionally since a time): per-tag photo counts, and photos."""
        condition = "verdict = 1" + (" AND created_at >= ?" if since is not None else "")
        parameters = (since,) if since is not None else ()
        async with self._reading() as db:
            counts = await db.fetch(
                f"SELECT tag, COUNT(DISTINCT suggestion_id) FROM feedback WHERE {condition} "
                "GROUP BY tag",
                *parameters,
            )
            photos = await db.fetch(
                f"SELECT COUNT(DISTINCT suggestion_id) FROM feedback WHERE {condition}",
                *parameters,
            )
        return {tag: count for tag, count in counts}, photos[0][0]

    async def answered_photos(self, encoder: str | None, dim: int | None = None) -> AnsweredPhotos:
        """Every answered suggestion whose embedding `encoder` made (None: any encoder), oldest
        first, with how many answered ones another (or an unknown) encoder made, and the rows
        that are damaged.

        `dim` is the size of the embeddings the encoder makes: a row of another size is
        damaged. Without it, the size most of that encoder's rows have counts; give it whenever
        the model is at hand, since a majority of bad rows would otherwise win.

        One statement reads the suggestions with their verdicts, so an answer undone meanwhile
        is either wholly there or wholly gone.
        """
        where, parameters = ("WHERE s.encoder = ? ", (encoder,)) if encoder else ("", ())
        other_encoder = 0
        async with self._reading() as db:
            rows = await db.fetch(
                "SELECT s.id, s.user_id, s.created_at, s.embedding, s.shown, s.encoder, f.tag, "
                "f.verdict FROM suggestions s JOIN feedback f ON f.suggestion_id = s.id "
                f"{where}ORDER BY s.created_at, s.id, f.created_at, f.source",
                *parameters,
            )
            if encoder:
                ((other_encoder,),) = await db.fetch(
                    "SELECT COUNT(*) FROM suggestions WHERE (encoder IS NULL OR encoder <> ?) "
                    "AND id IN (SELECT suggestion_id FROM feedback)",
                    encoder,
                )
        photos: dict[int, AnsweredPhoto] = {}
        made_by: dict[int, str | None] = {}
        damaged: dict[int, str] = {}
        for suggestion_id, user_id, created_at, embedding, shown, made, tag, verdict in rows:
            if suggestion_id in damaged:
                continue
            try:
                if (photo := photos.get(suggestion_id)) is None:
                    photo = AnsweredPhoto(
                        suggestion_id,
                        user_id,
                        decode_time(created_at, suggestion_id),
                        decode_embedding(embedding, suggestion_id),
                        [entry.tag for entry in decode_shown(shown, suggestion_id)],
                        {},
                    )
                    photos[suggestion_id], made_by[suggestion_id] = photo, made
                if not isinstance(tag, str):  # SQLite keeps a BLOB in a TEXT column
                    raise DamagedRow(f"suggestion {suggestion_id}: an answer's hashtag is not text")
            except DamagedRow as error:
                damaged[suggestion_id] = str(error)
                continue
            photo.verdicts[tag] = verdict  # rows come oldest first: the latest verdict wins
        for suggestion_id, problem in _wrong_sizes(photos, made_by, dim).items():
            damaged.setdefault(suggestion_id, problem)
        usable = [photo for i, photo in photos.items() if i not in damaged]
        return AnsweredPhotos(usable, other_encoder, [damaged[i] for i in sorted(damaged)])

    async def person_settings(self, user_id: int) -> PersonSettings:
        async with self._reading() as db:
            rows = await db.fetch(
                "SELECT tag_count, language FROM person_settings WHERE user_id = ?", user_id
            )
            hidden = await db.fetch("SELECT tag FROM hidden_tags WHERE user_id = ?", user_id)
        count, language = rows[0] if rows else (None, None)
        return PersonSettings(count, language, frozenset(tag for (tag,) in hidden))

    async def set_tag_count(self, user_id: int, count: int | None) -> None:
        await self._set_setting("tag_count", user_id, count)

    async def set_language(self, user_id: int, language: str | None) -> None:
        await self._set_setting("language", user_id, language)

    async def _set_setting(self, column: str, user_id: int, value: object) -> None:
        # `column` is one of the two names above, never a person's text.
        async with self._transaction() as db:
            await db.execute(
                f"INSERT INTO person_settings (user_id, {column}) VALUES (?, ?) "
                f"ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column}",
                user_id,
                value,
            )

    async def hide_tags(self, user_id: int, tags: Sequence[str]) -> None:
        async with self._transaction() as db:
            await db.executemany(
                "INSERT INTO hidden_tags (user_id, tag, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, tag) DO NOTHING",
                [(user_id, tag, time.time()) for tag in tags],
            )

    async def unhide_tag(self, user_id: int, tag: str) -> bool:
        """True when the tag was hidden."""
        async with self._transaction() as db:
            changed = await db.execute(
                "DELETE FROM hidden_tags WHERE user_id = ? AND tag = ?", user_id, tag
            )
        return changed > 0

    async def forget_user(self, user_id: int) -> None:
        """Delete the person and, by cascade, every suggestion, verdict and setting of theirs
        (and take their photos out of everyone's trust record)."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE trust_totals SET "
                "wins = wins - (SELECT COUNT(*) FROM suggestions WHERE user_id = ? "
                "AND personal_won > 0), "
                "losses = losses - (SELECT COUNT(*) FROM suggestions WHERE user_id = ? "
                "AND personal_won < 0) WHERE id = 1",
                user_id,
                user_id,
            )
            await db.execute("DELETE FROM users WHERE id = ?", user_id)


async def _answers_changed(db: Connection, suggestion_id: int) -> None:
    """After a change to one photo's answers: keep suggestions.personal_won in step with them
    (bot/core/trust.py), and count the change in the person's history_version."""
    ((shown, user_id, was),) = await db.fetch(
        "SELECT shown, user_id, personal_won FROM suggestions WHERE id = ?", suggestion_id
    )
    answers = await db.fetch(
        "SELECT tag, verdict FROM feedback WHERE suggestion_id = ? ORDER BY created_at",
        suggestion_id,
    )
    verdicts = {tag: verdict for tag, verdict in answers}  # the latest verdict per tag wins
    won = personal_order_won(decode_shown(shown, suggestion_id), verdicts)
    if won != was:
        await db.execute("UPDATE suggestions SET personal_won = ? WHERE id = ?", won, suggestion_id)
        await db.execute(
            "UPDATE trust_totals SET wins = wins + ?, losses = losses + ? WHERE id = 1",
            (won > 0) - (was > 0),
            (won < 0) - (was < 0),
        )
    await db.execute("UPDATE users SET history_version = history_version + 1 WHERE id = ?", user_id)


def _history_from_rows(rows: Sequence[Sequence[Any]]) -> UserHistory:
    """A person's rows (oldest first) as one UserHistory: the latest verdict per tag wins.

    A photo whose embedding is damaged (or of another size than most of theirs: another
    encoder's) is left out with a warning naming it, rather than breaking every suggestion
    for that person."""
    photos: dict[int, tuple[float, np.ndarray, dict[str, int], int]] = {}
    damaged: set[int] = set()
    for suggestion_id, tag, verdict, created_at, embedding, won in rows:
        if suggestion_id in damaged:
            continue
        if suggestion_id not in photos:
            try:
                vector = decode_embedding(embedding, suggestion_id)
            except DamagedRow as error:
                log.warning("left out of a history: %s", error)
                damaged.add(suggestion_id)
                continue
            photos[suggestion_id] = (created_at, vector, {}, won)
        photos[suggestion_id][2][tag] = verdict  # rows come oldest first: the latest wins
    sizes = Counter(len(photo[1]) for photo in photos.values())
    if len(sizes) > 1:
        size = max(sizes, key=lambda n: (sizes[n], n))
        for suggestion_id in [i for i, photo in photos.items() if len(photo[1]) != size]:
            log.warning("left out of a history: suggestion %d, another size", suggestion_id)
            del photos[suggestion_id]
    times = np.array([p[0] for p in photos.values()], dtype=np.float64)
    vectors = [p[1] for p in photos.values()]
    embeddings = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
    return UserHistory(
        times,
        embeddings,
        [p[2] for p in photos.values()],
        list(photos),
        [p[3] for p in photos.values()],
    )


def _wrong_sizes(
    photos: dict[int, AnsweredPhoto], made_by: dict[int, str | None], dim: int | None
) -> dict[int, str]:
    """The photos whose embedding is not of the size their encoder makes, each with why.

    One encoder makes embeddings of one size: `dim` when given, else the size most of that
    encoder's rows have (encoders of other sizes may share a database)."""
    sizes: dict[str | None, Counter[int]] = {}
    for suggestion_id, photo in photos.items():
        sizes.setdefault(made_by[suggestion_id], Counter())[len(photo.embedding)] += 1
    wrong = {}
    for suggestion_id, photo in photos.items():
        counts = sizes[made_by[suggestion_id]]
        size = dim or max(counts, key=lambda n: (counts[n], n))
        if len(photo.embedding) != size:
            whose = "the encoder makes" if dim else "that encoder's other rows have"
            wrong[suggestion_id] = (
                f"suggestion {suggestion_id}: its embedding has {len(photo.embedding)} "
                f"numbers where {whose} {size}"
            )
    return wrong
