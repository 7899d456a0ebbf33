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
from dataclasses import dataclass
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
        "DISCORD_BOT_TOKEN (both: one process serves both). Optional: TELEGRAM_API_URL for a "
        "self-hosted Bot API server; DISCORD_API_URL and DISCORD_GATEWAY_URL for proxies.",
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
    discord_options = parser.add_argument_group("Discord")
    discord_options.add_argument(
        "--discord-guild",
        type=int,
        metavar="ID",
        help="sync slash commands to this server only (instant; for development)",
    )
    discord_options.add_argument(
        "--discord-channels",
        default=os.environ.get("DISCORD_CHANNELS", ""),
        metavar="ID,ID",
        help="channels where photos in ordinary messages are answered; needs the privileged "
        "message_content intent (default: none, so only DMs, mentions, /tags and the menu)",
    )
    discord_options.add_argument(
        "--discord-sharded", action="store_true", help="AutoShardedClient, for large bots"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    tokens = Tokens(
        telegram=os.environ.get("TELEGRAM_BOT_TOKEN", "").strip(),
        discord=os.environ.get("DISCORD_BOT_TOKEN", "").strip(),
    )
    try:
        channels = [int(c) for c in args.discord_channels.replace(" ", "").split(",") if c]
    except ValueError:
        parser.error("--discord-channels takes channel ids separated by commas")
    if not args.console and not (tokens.telegram or tokens.discord):
        print(NO_TOKEN, file=sys.stderr)
        return EXIT_USAGE
    configure_logging([tokens.telegram, tokens.discord], level="WARNING" if args.console else None)
    try:
        return asyncio.run(_run(args, tokens, channels))
    except (*MODEL_SETUP_ERRORS, SchemaTooNew) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


@dataclass(frozen=True)
class Tokens:
    telegram: str
    discord: str


async def _run(args: argparse.Namespace, tokens: Tokens, channels: list[int]) -> int:
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
                await _serve(service, tokens, args, channels)
    finally:
        await store.close()
    return EXIT_OK


async def _serve(service: HashtagService, tokens: Tokens, args, channels: list[int]) -> None:
    """Every configured platform in this one process, on one engine and one database."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(signal_number, stop.set)
    async with contextlib.AsyncExitStack() as platforms:
        if tokens.telegram:
            await platforms.enter_async_context(_telegram(service, tokens.telegram))
        if tokens.discord:
            await platforms.enter_async_context(
                _discord(
                    service, tokens.discord, args.discord_guild, channels, args.discord_sharded
                )
            )
        await stop.wait()
        log.info("stopping")


@contextlib.asynccontextmanager
async def _telegram(service: HashtagService, token: str):
    from bot.telegram_bot import ALLOWED_UPDATES, build_application

    application = build_application(service, token, os.environ.get("TELEGRAM_API_URL"))
    async with application:
        await application.start()
        await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        log.info("Telegram bot @%s is running", application.bot.username)
        yield
        await application.updater.stop()
        await application.stop()


@contextlib.asynccontextmanager
async def _discord(service, token: str, guild: int | None, channels: list[int], sharded: bool):
    from bot.discord_bot import build_client, use_endpoints

    use_endpoints(os.environ.get("DISCORD_API_URL"), os.environ.get("DISCORD_GATEWAY_URL"))
    client = build_client(service, guild_id=guild, content_channels=channels, sharded=sharded)
    # discord.py reconnects by itself; the task ends only when the client is closed.
    running = asyncio.create_task(client.start(token), name="discord")
    log.info("Discord bot is starting")
    try:
        yield
    finally:
        await client.close()
        await asyncio.gather(running, return_exceptions=True)


def _model_version(args: argparse.Namespace) -> str:
    if args.checkpoint:
        return f"checkpoint:{Path(args.checkpoint).resolve().name}"
    return (
        f"zero-shot:{args.model or 'ViT-B-32'}:{Path(args.pretrained or 'laion2b_s34b_b79k').name}"
    )
