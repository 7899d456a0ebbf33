"""The SQLite back end: one file, the default, right for one process.

Durability rules:
- WAL journal, `synchronous=FULL`: once a write returns, it survives a `kill -9` or a crash.
- Every write is one explicit transaction behind an asyncio lock, so concurrent coroutines
  sharing the connection never interleave half-transactions. Reads take the same lock: on
  the one shared connection a read in the middle of a write would see its uncommitted rows,
  which a rollback may then take back.
- "database is locked", "disk is full" and a damaged file become `StoreUnavailable` with a
  message to show, and each transaction's outcome is kept for /healthz (bot/store/health.py).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.core.i18n import N_
from bot.store.base import Store
from bot.store.health import StoreHealth
from bot.store.records import StoreUnavailable
from bot.store.schema import migrate

BUSY_TIMEOUT_MS = 5000


class _Connection:
    """The queries' Connection on aiosqlite (which takes `?` placeholders as they are)."""

    def __init__(self, db: aiosqlite.Connection):
        self.db = db

    async def fetch(self, query: str, *parameters: Any) -> Sequence[Sequence[Any]]:
        cursor = await self.db.execute(query, parameters)
        return await cursor.fetchall()

    async def execute(self, query: str, *parameters: Any) -> int:
        cursor = await self.db.execute(query, parameters)
        return cursor.rowcount

    async def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.db.executemany(query, rows)


class SqliteStore(Store):
    def __init__(self, connection: aiosqlite.Connection):
        self._db = connection
        self._connection = _Connection(connection)
        self._lock = asyncio.Lock()  # one reader or writer at a time on the shared connection
        self.health = StoreHealth()

    @classmethod
    async def connect(cls, path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> SqliteStore:
        """Open (creating if needed) and migrate the database at `path`.

        `busy_timeout_ms`: how long a write waits for another process's lock before giving up.
        """
        if problem := _cannot_open(Path(path)):
            raise StoreUnavailable(problem)
        try:
            connection = await aiosqlite.connect(str(path), isolation_level=None)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"cannot open the database {path} ({error})") from None
        try:
            async with _unavailable_on_sqlite_errors(StoreHealth(), where=f" {path}"):
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
        async with self._lock:
            await self._db.close()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[_Connection]:
        async with self._lock, _unavailable_on_sqlite_errors(self.health):
            yield self._connection

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Connection]:
        with self.health.transaction():
            async with self._lock, _unavailable_on_sqlite_errors(self.health):
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._connection
                    await self._db.execute("COMMIT")
                except BaseException:
                    # SQLite has already rolled back after some errors (a full disk, for one).
                    if self._db.in_transaction:
                        await self._db.execute("ROLLBACK")
                    raise


def _cannot_open(path: Path) -> str | None:
    """Why SQLite would say only "unable to open database file", in words that say what to do."""
    if path.is_dir():
        return f"--db {path} is a folder; give a file in it, e.g. {path / 'hashtag-bot.sqlite3'}"
    folder = path.parent
    if not folder.is_dir():
        return (
            f"the folder {folder} for the database {path.name} does not exist; create it, or "
            "change --db"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"cannot write in {folder}, where the database {path.name} and its journal live; "
            "give the bot's user write access there, or change --db"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"cannot read and write the database {path}; check its owner and permissions"
    return None


@asynccontextmanager
async def _unavailable_on_sqlite_errors(
    health: StoreHealth, where: str = ""
) -> AsyncIterator[None]:
    """SQLite's errors that an operator (or a person waiting) can act on, as StoreUnavailable;
    `where` names the file at start, when the operator reads it."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        problem, damaged = _explain(error, where)
        if problem is None:
            raise
        health.failed(problem, damaged)
        raise StoreUnavailable(problem) from error


def _explain(error: sqlite3.DatabaseError, where: str) -> tuple[str | None, bool]:
    message = str(error).lower()
    if "malformed" in message or "not a database" in message or "corrupt" in message:
        return (
            f"The database{where} is damaged ({error}), so nothing can be read or saved; the "
            "operator must restore it from a backup (README: Backups).",
            True,
        )
    if not isinstance(error, sqlite3.OperationalError):
        return None, False  # a constraint or a programming error: a bug, not the database
    if "locked" in message or "busy" in message:
        return N_("The database is busy right now; please try again in a moment."), False
    if "full" in message:
        return (
            N_("The server's disk is full, so nothing can be saved; the operator must free space."),
            False,
        )
    if "disk i/o" in message or "readonly" in message or "read-only" in message:
        return f"The database{where} cannot be written ({error}).", False
    if "unable to open" in message:
        return f"The database{where} cannot be opened ({error}).", False
    return None, False
