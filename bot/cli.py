"""`python -m bot`: run the bot on Telegram (and Discord), or try it in a terminal.

The settings are read in bot/options.py, turned into a model and commands in bot/wiring.py,
and run in bot/lifecycle.py; this is where they meet, and where start-up errors become exit
codes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from bot.core.blocklist import BlockList, BlockListError
from bot.lifecycle import run
from bot.operations.logs import configure_logging
from bot.operations.supervisor import what_to_do
from bot.options import build_parser, parse, shard_range
from bot.store import StoreUnavailable
from bot.store.records import is_postgres_url
from bot.store.schema import SchemaTooNew
from inference.options import MODEL_SETUP_ERRORS

__all__ = ["build_parser", "main", "shard_range"]

EXIT_FAILED, EXIT_USAGE = 1, 2
NO_TOKEN = """\
No chat platform is configured: set a bot token in the environment.
  Telegram: talk to @BotFather, send /newbot, then
            export TELEGRAM_BOT_TOKEN=123456:ABC...
  Discord:  create an application at https://discord.com/developers/applications, add a bot,
            then export DISCORD_BOT_TOKEN=...
Or try everything in this terminal, no account needed:
  python -m bot --console"""


def main(argv: Sequence[str] | None = None) -> int:
    parser, args, tokens, channels = parse(argv)
    if not args.console and not (tokens.telegram or tokens.discord):
        print(NO_TOKEN, file=sys.stderr)
        return EXIT_USAGE
    secrets_to_hide = [tokens.telegram, tokens.discord, tokens.webhook_secret]
    secrets_to_hide += database_password(str(args.db))
    configure_logging(secrets_to_hide, level="WARNING" if args.console else None)
    try:
        blocked = BlockList(args.blocked_hashtags)
    except BlockListError as error:
        parser.error(str(error))
    from telegram.error import InvalidToken, NetworkError

    try:
        return asyncio.run(run(args, tokens, channels, blocked))
    except (*MODEL_SETUP_ERRORS, SchemaTooNew, StoreUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidToken as error:  # Telegram's getMe at start
        reason, code = what_to_do(error)
        print(f"error: {reason}", file=sys.stderr)
        return code
    except NetworkError as error:  # Telegram's getMe at start, after its own retries
        where = os.environ.get("TELEGRAM_API_URL") or "api.telegram.org"
        print(
            f"error: cannot reach Telegram at {where} ({error}): check the network "
            "(and TELEGRAM_API_URL, if set), then start again",
            file=sys.stderr,
        )
        return EXIT_FAILED


def database_password(location: str) -> list[str]:
    """The password in a PostgreSQL URL, a secret like the tokens (as written, %-escapes and all;
    the escaped and unescaped forms are both hidden)."""
    if not is_postgres_url(location):
        return []
    password = urlsplit(location).password
    return [password, unquote(password)] if password else []
