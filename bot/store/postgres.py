"""The PostgreSQL back end: many bot processes (Discord shards on several machines) sharing one
database, through a pool of asyncpg connections.

The queries are base.Store's, with `?` turned into PostgreSQL's `$1, $2, ...`. Each write is
one transaction on a pooled connection, so concurrent writers from any number of processes
serialise only where they touch the same rows. The numbered migrations in
`migrations/postgresql/` run under an advisory lock: however many processes start together,
each migration is applied exactly once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bot.core.i18n import N_
from bot.store.base import Store
from bot.store.health import StoreHealth
from bot.store.records import StoreUnavailable
from bot.store.schema import check_not_newer, migrations

POOL_SIZE = 8
# pg_advisory_lock takes any 64-bit key; this one is ours ("hashtag" in ASCII, as a number).
MIGRATION_LOCK = 0x68617368746167

_PLACEHOLDER = re.compile(r"\?")
_UNREACHABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
_BUSY = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)


def _numbered(query: str) -> str:
    """`?, ?` -> `$1, $2` (the queries hold no literal question marks)."""
    numbers = iter(range(1, query.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", query)


class _Connection:
    """The queries' Connection on one asyncpg connection."""

    def __init__(self, connection: asyncpg.Connection):
        self.connection = connection

    async def fetch(self, query: str, *parameters: Any) -> Sequence[Sequence[Any]]:
        return await self.connection.fetch(_numbered(query), *parameters)

    async def execute(self, query: str, *parameters: Any) -> int:
        status = await self.connection.execute(_numbered(query), *parameters)
        return int(status.split()[-1])  # "DELETE 3", "UPDATE 1", "INSERT 0 1"

    async def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.connection.executemany(_numbered(query), list(rows))


class PostgresStore(Store):
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool
        self.health = StoreHealth()

    @classmethod
    async def connect(cls, url: str, pool_size: int = POOL_SIZE) -> PostgresStore:
        """Connect to `url` (postgresql://user[:password]@host[:port]/db, or with
        `?host=/run/postgresql` for a unix socket) and bring its schema up to date."""
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size)
        except (*_UNREACHABLE, asyncpg.PostgresError) as error:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {_where(url)}: {error}. Check that the server "
                "runs and the --db URL (user, host, database) is right."
            ) from None
        try:
            async with (
                _unavailable_on_postgres_errors(StoreHealth()),
                pool.acquire() as connection,
            ):
                await _migrate(connection)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[_Connection]:
        async with (
            _unavailable_on_postgres_errors(self.health),
            self._pool.acquire() as connection,
        ):
            yield _Connection(connection)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Connection]:
        with self.health.transaction():
            async with (
                _unavailable_on_postgres_errors(self.health),
                self._pool.acquire() as connection,
                connection.transaction(),
            ):
                yield _Connection(connection)


async def _migrate(connection: asyncpg.Connection) -> int:
    """Apply the migrations this database lacks, one transaction each; returns the version."""
    available = migrations("postgresql")
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        current = await connection.fetchval(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
        )
        check_not_newer(current, available[-1].version)
        for migration in available:
            if migration.version > current:
                async with connection.transaction():
                    await connection.execute(migration.sql)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        time.time(),
                    )
                current = migration.version
        return current
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


def _where(url: str) -> str:
    """host/database of a URL, without the user's password."""
    parts = urlsplit(url)
    return f"{parts.hostname or parts.query or 'localhost'}{parts.path}"


@asynccontextmanager
async def _unavailable_on_postgres_errors(health: StoreHealth) -> AsyncIterator[None]:
    """The server's errors that an operator (or a person waiting) can act on, as
    StoreUnavailable, each also kept for /healthz."""
    try:
        yield
    except Exception as error:
        problem, damaged = _explain(error)
        if problem is None:
            raise
        health.failed(problem, damaged)
        raise StoreUnavailable(problem) from error


def _explain(error: Exception) -> tuple[str | None, bool]:
    if isinstance(error, asyncpg.DataCorruptedError | asyncpg.IndexCorruptedError):
        return (
            f"The database is damaged ({error}), so nothing can be read or saved; the operator "
            "must restore it from a backup.",
            True,
        )
    if isinstance(error, asyncpg.DiskFullError):
        return (
            N_(
                "The database server's disk is full, so nothing can be saved; the operator "
                "must free space."
            ),
            False,
        )
    if isinstance(error, _BUSY):
        return N_("The database is busy right now; please try again in a moment."), False
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return f"The database cannot be written ({error}).", False
    if isinstance(error, _UNREACHABLE):
        return N_("The database cannot be reached right now; please try again in a moment."), False
    return None, False
