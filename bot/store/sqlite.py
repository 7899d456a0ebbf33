"""The SQLite back end: one file, the default, right for one process.

Durability rules:
- WAL journal, `synchronous=FULL`: once a write returns, it survives a `kill -9` or a crash.
- Every write is one explicit transaction behind an asyncio lock, so concurrent coroutines
  sharing the connection never interleave half-transactions. Reads take the same lock: on
  the one shared connection a read in the middle of a write would see its uncommitted rows,
  which a rollback may then take back.
- "database is locked" and "disk is full" become `StoreUnavailable` with a message to show.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.base import Store
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

    @classmethod
    async def connect(cls, path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> SqliteStore:
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
        async with self._lock:
            await self._db.close()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[_Connection]:
        async with self._lock, _unavailable_on_sqlite_errors():
            yield self._connection

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Connection]:
        async with self._lock, _unavailable_on_sqlite_errors():
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
                await self._db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk, for one).
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise


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
