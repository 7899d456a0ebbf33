"""`python -m bot`: run the bot on Telegram (and Discord), or try it in a terminal.

Tokens come only from the environment (TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN), never from
flags, which would show up in `ps` and shell history.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bot.adapters.console import run_console
from bot.core.blocklist import (
    ENVIRONMENT_VARIABLE as BLOCKED_HASHTAGS_VARIABLE,
)
from bot.core.blocklist import BlockList, BlockListError
from bot.core.ratelimit import RateLimit
from bot.core.service import DEFAULT_RATE_LIMIT, HashtagService
from bot.operations import metrics
from bot.operations.checkpoints import CheckpointLoader, CheckpointWatcher, checkpoint_stamp
from bot.operations.health import start_health_server
from bot.operations.learning import Learner, child_environment, feedback_command
from bot.operations.logs import configure_logging
from bot.operations.supervisor import Supervisor, what_to_do
from bot.store import Store, StoreUnavailable, default_db_path, is_postgres_url
from bot.store.schema import SchemaTooNew
from inference.device import serving_device
from inference.engine import InferenceEngine, Servable
from inference.onnx_backend import OnnxHashtagModel
from inference.options import (
    MODEL_SETUP_ERRORS,
    add_model_arguments,
    check_model_arguments,
    load_model_from_args,
)
from inference.spec import (
    CONFIG_FILE,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    ModelLoadError,
    ModelSpec,
    checkpoint_version,
    zero_shot_version,
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
        default=default_db_path(),
        help="a SQLite file (default: hashtag-bot.sqlite3 here), or a PostgreSQL URL "
        "(postgresql://user@host/db) for several bot processes on one database; $HASHTAG_DB",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=os.environ.get("HASHTAG_TOP_K", "10"),
        help="hashtags per suggestion (default 10; $HASHTAG_TOP_K)",
    )
    limits = parser.add_argument_group("rate limit (chat platforms; the console has none)")
    limits.add_argument(
        "--rate-per-minute",
        type=float,
        default=os.environ.get("RATE_LIMIT_PER_MINUTE", str(DEFAULT_RATE_LIMIT.per_minute)),
        metavar="N",
        help="photos a person may send per minute, sustained (default "
        f"{DEFAULT_RATE_LIMIT.per_minute:g}; $RATE_LIMIT_PER_MINUTE)",
    )
    limits.add_argument(
        "--rate-burst",
        type=int,
        default=os.environ.get("RATE_LIMIT_BURST", str(DEFAULT_RATE_LIMIT.burst)),
        metavar="N",
        help=f"photos a person may send at once (default {DEFAULT_RATE_LIMIT.burst}; "
        "$RATE_LIMIT_BURST)",
    )
    learning = parser.add_argument_group("learning from feedback (see README, 'The bot learns')")
    learning.add_argument(
        "--learn-every",
        type=float,
        default=os.environ.get("LEARN_EVERY_HOURS"),
        metavar="HOURS",
        help="re-fit the head on everyone's answers this often, in the background, and swap "
        "it in when it is not worse on the newest answers (default off; $LEARN_EVERY_HOURS)",
    )
    learning.add_argument(
        "--learned-checkpoint",
        type=Path,
        default=os.environ.get("HASHTAG_LEARNED_CHECKPOINT"),
        metavar="DIR",
        help="where --learn-every keeps the learned head, served from then on (default: "
        "learned-model beside the --db file; $HASHTAG_LEARNED_CHECKPOINT)",
    )
    learning.add_argument(
        "--min-people",
        type=int,
        default=os.environ.get("HASHTAG_MIN_PEOPLE", "5"),
        metavar="N",
        help="different people who must have used a new hashtag before anyone else is "
        "offered it (default 5; $HASHTAG_MIN_PEOPLE)",
    )
    learning.add_argument(
        "--min-days",
        type=int,
        default=os.environ.get("HASHTAG_MIN_DAYS", "2"),
        metavar="N",
        help="days (UTC) on which a person must have answered before they count towards "
        "--min-people (default 2; $HASHTAG_MIN_DAYS)",
    )
    learning.add_argument(
        "--blocked-hashtags",
        type=Path,
        default=os.environ.get(BLOCKED_HASHTAGS_VARIABLE),
        metavar="FILE",
        help="hashtags never suggested to anyone, never shared, never trending, one per line; "
        "re-read when it changes (default: the list that ships with the bot; "
        f"${BLOCKED_HASHTAGS_VARIABLE})",
    )
    learning.add_argument(
        "--watch-interval",
        type=float,
        default=os.environ.get("CHECKPOINT_WATCH_SECONDS", "10"),
        metavar="SECONDS",
        help="how often to look for a replaced checkpoint directory to swap in (default 10)",
    )
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
    telegram_options = parser.add_argument_group(
        "Telegram webhook (default: polling; the secret token comes from "
        "$TELEGRAM_WEBHOOK_SECRET, or is made afresh at each start)"
    )
    telegram_options.add_argument(
        "--telegram-webhook-url",
        default=os.environ.get("TELEGRAM_WEBHOOK_URL"),
        metavar="URL",
        help="the public HTTPS address Telegram posts updates to, e.g. "
        "https://bot.example.com/telegram; $TELEGRAM_WEBHOOK_URL",
    )
    telegram_options.add_argument(
        "--telegram-webhook-listen",
        default=os.environ.get("TELEGRAM_WEBHOOK_LISTEN", "127.0.0.1"),
        metavar="ADDRESS",
        help="address the webhook server binds, behind your HTTPS proxy (default 127.0.0.1)",
    )
    telegram_options.add_argument(
        "--telegram-webhook-port",
        type=int,
        default=os.environ.get("TELEGRAM_WEBHOOK_PORT", "8443"),
        metavar="PORT",
        help="port of the webhook server (default 8443; $TELEGRAM_WEBHOOK_PORT)",
    )
    discord_options = parser.add_argument_group("Discord")
    discord_options.add_argument(
        "--discord-guild",
        type=int,
        default=os.environ.get("DISCORD_GUILD"),
        metavar="ID",
        help="sync slash commands to this server only (instant; for development; $DISCORD_GUILD)",
    )
    discord_options.add_argument(
        "--discord-channels",
        default=os.environ.get("DISCORD_CHANNELS", ""),
        metavar="ID,ID",
        help="channels where photos in ordinary messages are answered; needs the privileged "
        "message_content intent (default: none, so only DMs, mentions, /tags and the menu)",
    )
    discord_options.add_argument(
        "--discord-sharded",
        action="store_true",
        help="all of Discord's recommended shards in this process (AutoShardedClient)",
    )
    discord_options.add_argument(
        "--discord-shards",
        type=shard_range,
        default=os.environ.get("DISCORD_SHARDS"),
        metavar="0-3",
        help="run only these shards (a range, or ids separated by commas), so N processes "
        "cover all of them; needs --discord-shard-count ($DISCORD_SHARDS)",
    )
    discord_options.add_argument(
        "--discord-shard-count",
        type=int,
        default=os.environ.get("DISCORD_SHARD_COUNT"),
        metavar="N",
        help="how many shards the bot has across all its processes ($DISCORD_SHARD_COUNT)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    tokens = Tokens(
        telegram=os.environ.get("TELEGRAM_BOT_TOKEN", "").strip(),
        discord=os.environ.get("DISCORD_BOT_TOKEN", "").strip(),
        webhook_secret=os.environ.get("TELEGRAM_WEBHOOK_SECRET", "").strip()
        or secrets.token_urlsafe(32),
    )
    try:
        channels = [int(c) for c in args.discord_channels.replace(" ", "").split(",") if c]
    except ValueError:
        parser.error("--discord-channels takes channel ids separated by commas")
    if (args.discord_shards is None) != (args.discord_shard_count is None):
        parser.error("--discord-shards and --discord-shard-count go together")
    if args.discord_shards and not all(
        0 <= shard < args.discord_shard_count for shard in args.discord_shards
    ):
        parser.error(
            f"--discord-shards must be between 0 and {args.discord_shard_count - 1} "
            "(shard ids count from 0)"
        )
    if args.rate_per_minute <= 0 or args.rate_burst < 1:
        parser.error("--rate-per-minute must be positive and --rate-burst at least 1")
    if args.learn_every is not None and args.learn_every <= 0:
        parser.error("--learn-every takes a positive number of hours")
    if args.min_people < 1 or args.min_days < 1:
        parser.error("--min-people and --min-days must be at least 1")
    if not 1 <= args.top_k <= 100:
        parser.error("--top-k takes 1 to 100 hashtags per suggestion")
    if args.watch_interval <= 0 or args.shutdown_timeout < 0:
        parser.error("--watch-interval must be positive and --shutdown-timeout not negative")
    if args.learn_every and is_postgres_url(args.db) and not args.learned_checkpoint:
        parser.error(
            "with a PostgreSQL --db, give --learned-checkpoint DIR (on storage every process "
            "that serves it can read) and let one process learn"
        )
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", tokens.webhook_secret):
        parser.error("TELEGRAM_WEBHOOK_SECRET takes 1-256 characters: A-Z, a-z, 0-9, _ and -")
    if args.telegram_webhook_url and not urlsplit(args.telegram_webhook_url).hostname:
        parser.error("--telegram-webhook-url takes a full URL, e.g. https://bot.example.com/tg")
    if not args.console and not (tokens.telegram or tokens.discord):
        print(NO_TOKEN, file=sys.stderr)
        return EXIT_USAGE
    secrets_to_hide = [tokens.telegram, tokens.discord, tokens.webhook_secret]
    configure_logging(secrets_to_hide, level="WARNING" if args.console else None)
    try:
        blocked = BlockList(args.blocked_hashtags)
    except BlockListError as error:
        parser.error(str(error))
    from telegram.error import InvalidToken

    try:
        return asyncio.run(_run(args, tokens, channels, blocked))
    except (*MODEL_SETUP_ERRORS, SchemaTooNew, StoreUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidToken as error:  # Telegram's getMe at start
        reason, code = what_to_do(error)
        print(f"error: {reason}", file=sys.stderr)
        return code


@dataclass(frozen=True)
class Tokens:
    telegram: str
    discord: str
    webhook_secret: str  # Telegram sends it with every webhook call; others are refused


async def _run(
    args: argparse.Namespace, tokens: Tokens, channels: list[int], blocked: BlockList
) -> int:
    served_dir = _served_checkpoint(args)
    stamp = checkpoint_stamp(served_dir) if served_dir else None
    load = _checkpoint_loader(args)
    source = served_dir if stamp else args.checkpoint
    if source:
        model, version = load(source)
    else:
        model, _ = load_model_from_args(args)
        version = _base_version(args) + _backend_mark(model, args)
    store = await Store.open(args.db)
    engine = InferenceEngine(
        model,
        serving_device(args.device),  # where load_model_from_args put the model
        version=version,
        on_decode=metrics.record_decode,
        on_batch=metrics.record_batch,
    )
    metrics.watch_queue(engine)
    supervisor = Supervisor()
    try:
        async with engine, contextlib.AsyncExitStack() as background:
            background.push_async_callback(supervisor.stop)
            if served_dir:
                watcher = CheckpointWatcher(engine, served_dir, load, args.watch_interval, stamp)
                supervisor.start("checkpoint watcher", watcher.run(), essential=False)
                if args.learn_every:
                    learner = Learner(
                        feedback_command(
                            served_dir,
                            _model_options(args),
                            _sharing_options(args),
                            with_onnx=isinstance(model, OnnxHashtagModel),
                        ),
                        watcher,
                        args.learn_every,
                        child_environment(str(args.db)),
                    )
                    supervisor.start("learner", learner.run(), essential=False)
            service = HashtagService(
                engine,
                store,
                blocked=blocked,
                top_k=args.top_k,
                rate_limit=None
                if args.console
                else RateLimit(per_minute=args.rate_per_minute, burst=args.rate_burst),
            )
            if args.console:
                await run_console(service)
            else:
                await _serve(service, tokens, args, channels, supervisor)
    finally:
        await store.close()  # every acknowledged write is already committed
    if supervisor.exit_code:
        reasons = "; ".join(f"{name}: {why}" for name, why in supervisor.failures.items())
        print(f"error: stopped because {reasons}", file=sys.stderr)
        return supervisor.exit_code
    log.info("stopped cleanly")
    return EXIT_OK


async def _serve(
    service: HashtagService, tokens: Tokens, args, channels: list[int], supervisor: Supervisor
) -> None:
    """Every configured platform in this one process, on one engine and one database, until
    a signal, or until a platform client fails for good."""
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
                service, connected, args.metrics_host, args.metrics_port, supervisor.failures
            )
            running.push_async_callback(runner.cleanup)
            log.info("health and metrics on %s:%d", args.metrics_host, args.metrics_port)
        telegram = None
        if tokens.telegram:
            telegram = await running.enter_async_context(_telegram(service, tokens, args))
            connected["telegram"] = lambda: telegram.updater.running
        if tokens.discord:
            client = await running.enter_async_context(
                _discord(service, tokens.discord, args, channels, supervisor)
            )
            connected["discord"] = lambda: client.is_ready() and not client.is_closed()
            for shard_id in args.discord_shards or ():
                connected[f"discord_shard_{shard_id}"] = functools.partial(
                    _shard_connected, client, shard_id
                )
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(supervisor.failed.wait())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        for waiting in (stopped, failed):
            waiting.cancel()
        supervisor.stopping()
        # Stop taking updates, let the work in flight finish, then disconnect (stack exit).
        log.info("stopping: finishing the work in flight (at most %.0f s)", args.shutdown_timeout)
        if telegram:
            await telegram.updater.stop()
        if not await service.drain(args.shutdown_timeout):
            log.warning("gave up waiting for work in flight after %.0f s", args.shutdown_timeout)


@contextlib.asynccontextmanager
async def _telegram(service: HashtagService, tokens: Tokens, args: argparse.Namespace):
    """Polling, or with --telegram-webhook-url PTB's webhook server (removed on the way out)."""
    from bot.adapters.telegram_bot import ALLOWED_UPDATES, build_application

    application = build_application(service, tokens.telegram, os.environ.get("TELEGRAM_API_URL"))
    webhook = args.telegram_webhook_url
    async with application:
        await application.start()
        if webhook:
            await application.updater.start_webhook(
                listen=args.telegram_webhook_listen,
                port=args.telegram_webhook_port,
                url_path=urlsplit(webhook).path.lstrip("/"),
                webhook_url=webhook,
                secret_token=tokens.webhook_secret,
                allowed_updates=ALLOWED_UPDATES,
            )
        else:
            await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        log.info(
            "Telegram bot @%s is running (%s)",
            application.bot.username,
            f"webhook on port {args.telegram_webhook_port}" if webhook else "polling",
        )
        yield application
        if application.updater.running:
            await application.updater.stop()
        if webhook:  # Telegram would keep posting to a bot that is gone
            await application.bot.delete_webhook()
        await application.stop()


def shard_range(text: str) -> list[int]:
    """Shard ids from `0-3` (-> 0, 1, 2, 3) or `0,2,5`, the forms --discord-shards takes."""
    shards: list[int] = []
    for part in text.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        try:
            shards += range(int(first), int(last or first) + 1)
        except ValueError:
            message = f"{text!r}: give shard ids like 0-3 or 0,2,5"
            raise argparse.ArgumentTypeError(message) from None
    if not shards:
        raise argparse.ArgumentTypeError(f"{text!r} names no shard")
    return sorted(set(shards))


def _shard_connected(client, shard_id: int) -> bool:
    shard = client.get_shard(shard_id)
    return shard is not None and not shard.is_closed()


@contextlib.asynccontextmanager
async def _discord(
    service, token: str, args: argparse.Namespace, channels: list[int], supervisor: Supervisor
):
    from bot.adapters.discord_bot import build_client, use_endpoints

    use_endpoints(os.environ.get("DISCORD_API_URL"), os.environ.get("DISCORD_GATEWAY_URL"))
    client = build_client(
        service,
        guild_id=args.discord_guild,
        content_channels=channels,
        sharded=args.discord_sharded,
        shards=args.discord_shards,
        shard_count=args.discord_shard_count,
    )
    # discord.py reconnects by itself; the task ends early only when it cannot go on (a
    # rejected token, a refused intent), which the supervisor turns into an exit.
    supervisor.start("discord", client.start(token), essential=True)
    log.info("Discord bot is starting")
    try:
        yield client
    finally:
        await client.close()


def _served_checkpoint(args: argparse.Namespace) -> Path | None:
    """The checkpoint directory to serve and watch for replacements, if any.

    With --learn-every that is the learned head's directory, served once it exists, as long as
    it was learned on top of the model the options name; otherwise the model the options name.
    """
    if not args.learn_every:
        return args.checkpoint
    learned = args.learned_checkpoint or Path(args.db).resolve().parent / "learned-model"
    if checkpoint_stamp(learned):
        try:
            base = ModelSpec.from_file(learned / CONFIG_FILE).provenance.get("base")
        except (OSError, ValueError, TypeError) as error:
            base = f"unreadable ({error})"
        if base != _base_version(args):
            raise ModelLoadError(
                f"{learned} holds a head learned on top of {base}, not {_base_version(args)}: "
                "move it away to start learning afresh from this model, or give "
                "--learned-checkpoint another directory"
            )
        log.info("serving the learned head in %s (learned on top of %s)", learned, base)
    return learned


def _checkpoint_loader(args: argparse.Namespace) -> CheckpointLoader:
    def load(directory: Path) -> tuple[Servable, str]:
        served = argparse.Namespace(**{**vars(args), "checkpoint": directory})
        model, _ = load_model_from_args(served)
        return model, checkpoint_version(directory) + _backend_mark(model, args)

    return load


def _backend_mark(model: Servable, args: argparse.Namespace) -> str:
    """What a suggestion's model version adds for ONNX Runtime: int8 scores differ a little,
    so quality is counted apart for it."""
    if not isinstance(model, OnnxHashtagModel):
        return ""
    return ":onnx:int8" if args.int8 else ":onnx"


def _base_version(args: argparse.Namespace) -> str:
    """The model the options name, before any learning."""
    if args.checkpoint:
        return checkpoint_version(args.checkpoint)
    return zero_shot_version(args.model or DEFAULT_MODEL, args.pretrained or DEFAULT_PRETRAINED)


def _model_options(args: argparse.Namespace) -> list[str]:
    """The options that name the base model, for `python -m finetune feedback`."""
    if args.checkpoint:
        named = ["--checkpoint", str(args.checkpoint)]
    else:
        named = ["--model", args.model or DEFAULT_MODEL]
        named += ["--pretrained", args.pretrained or DEFAULT_PRETRAINED]
        named += ["--vocab", str(args.vocab)] if args.vocab else []
    return [*named, "--device", args.device]


def _sharing_options(args: argparse.Namespace) -> list[str]:
    shared = ["--min-people", str(args.min_people), "--min-days", str(args.min_days)]
    if args.blocked_hashtags:
        shared += ["--blocked-hashtags", str(args.blocked_hashtags)]
    return shared
