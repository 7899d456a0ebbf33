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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot import metrics
from bot.console import run_console
from bot.health import start_health_server
from bot.logs import configure_logging
from bot.schema import SchemaTooNew
from bot.service import HashtagService
from bot.store import Store
from inference.engine import InferenceEngine
from inference.onnx_backend import OnnxHashtagModel
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
    operations = parser.add_argument_group("operations")
    operations.add_argument(
        "--metrics-port",
        type=int,
        default=os.environ.get("METRICS_PORT"),  # argparse checks env values like flags
        metavar="PORT",
        help="serve /healthz and Prometheus /metrics on this port (default off; $METRICS_PORT)",
    )
    operations.add_argument(
        "--metrics-host",
        default=os.environ.get("METRICS_HOST", "127.0.0.1"),
        help="address for --metrics-port (default 127.0.0.1; the Docker image uses 0.0.0.0)",
    )
    operations.add_argument(
        "--shutdown-timeout",
        type=float,
        default=os.environ.get("SHUTDOWN_TIMEOUT", "20"),
        metavar="SECONDS",
        help="on SIGTERM, how long to wait for photos in flight (default 20)",
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
    engine = InferenceEngine(
        model, device, on_decode=metrics.record_decode, on_batch=metrics.record_batch
    )
    metrics.watch_queue(engine)
    try:
        async with engine:
            service = HashtagService(
                engine, store, model_version=_model_version(args, model), top_k=args.top_k
            )
            if args.console:
                await run_console(service)
            else:
                await _serve(service, tokens, args, channels)
    finally:
        await store.close()  # every acknowledged write is already committed
    log.info("stopped cleanly")
    return EXIT_OK


async def _serve(service: HashtagService, tokens: Tokens, args, channels: list[int]) -> None:
    """Every configured platform in this one process, on one engine and one database."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(signal_number, stop.set)
    async with contextlib.AsyncExitStack() as running:
        # Health first: it answers during start-up, with platforms "disconnected" until up.
        connected: dict[str, Callable[[], bool]] = {}
        if args.metrics_port:
            runner = await start_health_server(
                service, connected, args.metrics_host, args.metrics_port
            )
            running.push_async_callback(runner.cleanup)
            log.info("health and metrics on %s:%d", args.metrics_host, args.metrics_port)
        telegram = None
        if tokens.telegram:
            telegram = await running.enter_async_context(_telegram(service, tokens.telegram))
            connected["telegram"] = lambda: telegram.updater.running
        if tokens.discord:
            client = await running.enter_async_context(
                _discord(
                    service, tokens.discord, args.discord_guild, channels, args.discord_sharded
                )
            )
            connected["discord"] = lambda: client.is_ready() and not client.is_closed()
        await stop.wait()
        # Stop taking updates, let the work in flight finish, then disconnect (stack exit).
        log.info("stopping: finishing the work in flight (at most %.0f s)", args.shutdown_timeout)
        if telegram:
            await telegram.updater.stop()
        if not await service.drain(args.shutdown_timeout):
            log.warning("gave up waiting for work in flight after %.0f s", args.shutdown_timeout)


@contextlib.asynccontextmanager
async def _telegram(service: HashtagService, token: str):
    from bot.telegram_bot import ALLOWED_UPDATES, build_application

    application = build_application(service, token, os.environ.get("TELEGRAM_API_URL"))
    async with application:
        await application.start()
        await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        log.info("Telegram bot @%s is running", application.bot.username)
        yield application
        if application.updater.running:
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
        yield client
    finally:
        await client.close()
        await asyncio.gather(running, return_exceptions=True)


def _model_version(args: argparse.Namespace, model) -> str:
    """Stored with every suggestion, so feedback can be traced to the model that earned it."""
    if args.checkpoint:
        backend = ":onnx" if isinstance(model, OnnxHashtagModel) else ""
        backend += ":int8" if args.int8 else ""
        return f"checkpoint:{Path(args.checkpoint).resolve().name}{backend}"
    weights = Path(args.pretrained or "laion2b_s34b_b79k").name
    return f"zero-shot:{args.model or 'ViT-B-32'}:{weights}"
