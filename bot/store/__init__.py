"""The bot's store: people, the suggestions made to them, and what they said about them.

One interface (`Store`, with every query in bot/store/base.py) and two back ends:
- SQLite (bot/store/sqlite.py), a file path: the default, right for one process;
- PostgreSQL (bot/store/postgres.py), a `postgresql://` URL: many processes, one database.
`Store.open(location)` picks the back end from the location and migrates the database.
"""

from bot.store.base import Store
from bot.store.records import (
    VERDICT_ACCEPT,
    VERDICT_REJECT,
    AnsweredPhoto,
    PersonSettings,
    StoredSuggestion,
    StoreUnavailable,
    UserHistory,
    default_db_path,
    is_postgres_url,
)
from bot.store.schema import SchemaTooNew

__all__ = [
    "VERDICT_ACCEPT",
    "VERDICT_REJECT",
    "AnsweredPhoto",
    "PersonSettings",
    "SchemaTooNew",
    "Store",
    "StoreUnavailable",
    "StoredSuggestion",
    "UserHistory",
    "default_db_path",
    "is_postgres_url",
]
