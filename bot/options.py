"""What `python -m bot` is told: its flags, their environment equivalents, and the checks
that stop it at start, before anything loads, when a value cannot work.

Tokens come only from the environment (TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN), never from
flags, which would show up in `ps` and shell history.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bot.core.blocklist import (
    ENVIRONMENT_VARIABLE as BLOCKED_HASHTAGS_VARIABLE,
)
from bot.core.service import DEFAULT_RATE_LIMIT, DEFAULT_TOP_K
from bot.store import default_db_path, is_postgres_url
from inference.options import (
    add_model_arguments,
    check_model_arguments,
)


@dataclass(frozen=True)
class Tokens:
    telegram: str
    discord: str
    webhook_secret: str  # Telegram sends it with every webhook call; others are refused


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
        default=os.environ.get("HASHTAG_TOP_K", str(DEFAULT_TOP_K)),
        help=f"hashtags per suggestion, unless a person chose their own with /count (default "
        f"{DEFAULT_TOP_K}, Instagram's limit per post; $HASHTAG_TOP_K)",
    )
    parser.add_argument(
        "--privacy-contact",
        default=os.environ.get("HASHTAG_PRIVACY_CONTACT") or None,
        metavar="CONTACT",
        help="who people can ask about their data (an e-mail or @handle), shown by /privacy; "
        "$HASHTAG_PRIVACY_CONTACT",
    )
    parser.add_argument(
        "--profile-cache-mb",
        type=float,
        default=os.environ.get("HASHTAG_PROFILE_CACHE_MB", "256"),
        metavar="MB",
        help="memory for the profiles of recent people, kept between their photos (default "
        "256, about 60,000 answered photos in all; $HASHTAG_PROFILE_CACHE_MB)",
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


def parse(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, argparse.Namespace, Tokens, list[int]]:
    """The checked settings; a bad value exits with status 2 and a message (argparse's way)."""
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
    if not 0 <= args.profile_cache_mb < math.inf:
        parser.error("--profile-cache-mb cannot be negative (0 keeps no profile in memory)")
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
    return parser, args, tokens, channels


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
