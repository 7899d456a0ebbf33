"""Applying the numbered SQL files in `migrations/` at start-up.

Each file `NNNN_name.sql` runs once, inside a transaction together with a row in
`schema_migrations` (and, in SQLite, the bump of `PRAGMA user_version`), so a crash
mid-migration leaves the database at the previous version, never half-migrated. SQLite's files
are `migrations/*.sql`; PostgreSQL's, the same steps in its types, `migrations/postgresql/`
(applied by bot/store/postgres.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

import aiosqlite


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the bot."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str = "sqlite") -> list[Migration]:
    folder = resources.files("migrations")
    if dialect != "sqlite":
        folder = folder / dialect
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, ... without gaps: {versions}")
    return found


async def schema_version(db: aiosqlite.Connection) -> int:
    cursor = await db.execute("PRAGMA user_version")
    return (await cursor.fetchone())[0]


def check_not_newer(current: int, newest: int) -> None:
    if current > newest:
        raise SchemaTooNew(
            f"the database is at schema version {current}, but this code knows only up to "
            f"{newest}: it was written by a newer version of the bot. Upgrade the bot, or point "
            "--db at another database."
        )


async def migrate(db: aiosqlite.Connection, target: int | None = None) -> int:
    """Bring the database to `target` (default: the newest migration); returns the version."""
    available = migrations()
    newest = available[-1].version if available else 0
    target = newest if target is None else target
    current = await schema_version(db)
    check_not_newer(current, newest)
    for migration in available:
        if current < migration.version <= target:
            # executescript takes no parameters; the name is a \w+ file name and the numbers
            # are ours, so nothing outside this package reaches the SQL text.
            script = (
                "BEGIN IMMEDIATE;\n"
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at REAL NOT NULL);\n"
                f"{migration.sql}\n"
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES "
                f"({migration.version}, '{migration.name}', {time.time()});\n"
                f"PRAGMA user_version = {migration.version};\n"
                "COMMIT;"
            )
            try:
                await db.executescript(script)
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
    return await schema_version(db)
