"""`python -m bot`: run the bot on Telegram (and Discord), or try it in a terminal.

Tokens come only from the environment (TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN), never from
flags, which would show up in `ps` and shell history.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.console import run_console
from bot.logs import configure_logging
from bot.schema import SchemaTooNew
from bot.service import HashtagService
from bot.store import Store
from inference.engine import InferenceEngine
from inference.options import (
    MODEL_SETUP_ERRORS,
    add_model_arguments,
    check_model_arguments,
    load_model_from_args,
)

log = logging.getLogger("bot")

EXIT_OK, EXIT_USAGE = 0, 2
NO_TOKEN = """\
No chat platform is configured: set a bot token in the environment.
  Telegram: talk to @BotFather, send /newbot, then
            export TELEGRAM_BOT_TOKEN=123456:ABC...
  Discord:  create an application at https://discord.com/developers/applications, add a bot,
            then export DISCORD_BOT_TOKEN=...
Or try everything in this terminal, no account needed:
  python -m bot --console"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Hashtag bot for Telegram and Discord. Set TELEGRAM_BOT_TOKEN and/or "
        "DISCORD_BOT_TOKEN; optional TELEGRAM_API_URL for a self-hosted Bot API server.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(os.environ.get("HASHTAG_DB", "hashtag-bot.sqlite3")),
        help="SQLite database file (default: hashtag-bot.sqlite3 here, or $HASHTAG_DB)",
    )
    parser.add_argument("--top-k", type=int, default=10, help="hashtags per suggestion")
    parser.add_argument(
        "--console", action="store_true", help="chat in this terminal instead of a platform"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    telegram_token = os.environ.get("TELEGRAM_BOT_TOKEN", "").strip()
    if not args.console and not telegram_token:
        print(NO_TOKEN, file=sys.stderr)
        return EXIT_USAGE
    configure_logging([telegram_token], level=None if not args.console else "WARNING")
    try:
        return asyncio.run(_run(args, telegram_token))
    except (*MODEL_SETUP_ERRORS, SchemaTooNew) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


async def _run(args: argparse.Namespace, telegram_token: str) -> int:
    model, device = load_model_from_args(args)
    store = await Store.open(args.db)
    try:
        async with InferenceEngine(model, device) as engine:
            service = HashtagService(
                engine, store, model_version=_model_version(args), top_k=args.top_k
            )
            if args.console:
                await run_console(service)
            else:
                await _serve_telegram(service, telegram_token)
    finally:
        await store.close()
    return EXIT_OK


async def _serve_telegram(service: HashtagService, token: str) -> None:
    from bot.telegram_bot import ALLOWED_UPDATES, build_application

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(signal_number, stop.set)
    application = build_application(service, token, os.environ.get("TELEGRAM_API_URL"))
    async with application:
        await application.start()
        await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        log.info("Telegram bot @%s is running", application.bot.username)
        await stop.wait()
        log.info("stopping")
        await application.updater.stop()
        await application.stop()


def _model_version(args: argparse.Namespace) -> str:
    if args.checkpoint:
        return f"checkpoint:{Path(args.checkpoint).resolve().name}"
    return (
        f"zero-shot:{args.model or 'ViT-B-32'}:{Path(args.pretrained or 'laion2b_s34b_b79k').name}"
    )
