"""The running bot: the model, the database and every platform in one process; signals,
the supervisor that hears background work fail, and the shutdown that finishes the work in
flight first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

from bot import wiring
from bot.adapters.console import run_console
from bot.core.blocklist import BlockList
from bot.core.ratelimit import RateLimit
from bot.core.service import HashtagService
from bot.operations import metrics
from bot.operations.checkpoints import CheckpointWatcher, checkpoint_stamp
from bot.operations.health import start_health_server
from bot.operations.learning import Learner, child_environment, feedback_command
from bot.operations.supervisor import Supervisor
from bot.options import Tokens
from bot.store import Store
from inference.backends.exported import ExportedModel
from inference.device import serving_device
from inference.engine import InferenceEngine
from inference.options import load_model_from_args

log = logging.getLogger("bot")


async def run(
    args: argparse.Namespace, tokens: Tokens, channels: list[int], blocked: BlockList
) -> int:
    store = await Store.open(args.db)  # first: a wrong --db fails before the model loads
    supervisor = Supervisor()
    try:
        served_dir = wiring.served_checkpoint(args)
        stamp = checkpoint_stamp(served_dir) if served_dir else None
        load = wiring.checkpoint_loader(args)
        source = served_dir if stamp else args.checkpoint
        if source:
            model, version = load(source)
        else:
            model, _ = load_model_from_args(args)
            version = wiring.base_version(args) + wiring.backend_mark(model, args)
        engine = InferenceEngine(
            model,
            serving_device(args.device),  # where load_model_from_args put the model
            version=version,
            on_decode=metrics.record_decode,
            on_batch=metrics.record_batch,
        )
        metrics.watch_queue(engine)
        async with engine, contextlib.AsyncExitStack() as background:
            background.push_async_callback(supervisor.stop)
            if served_dir:
                watcher = CheckpointWatcher(engine, served_dir, load, args.watch_interval, stamp)
                supervisor.start("checkpoint watcher", watcher.run(), essential=False)
                if args.learn_every:
                    learner = Learner(
                        feedback_command(
                            served_dir,
                            wiring.model_options(args),
                            wiring.sharing_options(args),
                            with_onnx=isinstance(model, ExportedModel),
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
                profile_cache_bytes=int(args.profile_cache_mb * 1024 * 1024),
                rate_limit=None
                if args.console
                else RateLimit(per_minute=args.rate_per_minute, burst=args.rate_burst),
            )
            if args.console:
                await run_console(service, privacy_contact=args.privacy_contact)
            else:
                await _serve(service, tokens, args, channels, supervisor)
    finally:
        await store.close()  # every acknowledged write is already committed
    if supervisor.exit_code:
        reasons = "; ".join(f"{name}: {why}" for name, why in supervisor.failures.items())
        print(f"error: stopped because {reasons}", file=sys.stderr)
        return supervisor.exit_code
    log.info("stopped cleanly")
    return 0


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
            if not args.telegram_webhook_url:
                supervisor.start("telegram", _telegram_polling(), essential=True)
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
        if telegram and telegram.updater.running:  # not when its polling has failed
            await telegram.updater.stop()
        if not await service.drain(args.shutdown_timeout):
            log.warning("gave up waiting for work in flight after %.0f s", args.shutdown_timeout)


# python-telegram-bot's name for the task that fetches updates. It ends only when stopped or
# on an error it does not retry (a revoked token), and keeps that error to itself.
TELEGRAM_POLLING_TASK = "Updater:start_polling:polling_task"


async def _telegram_polling() -> None:
    """Return or raise when Telegram updates stop coming in, with what stopped them."""
    polling = next((t for t in asyncio.all_tasks() if t.get_name() == TELEGRAM_POLLING_TASK), None)
    if polling is None:  # the library renamed it: carry on unwatched rather than stop
        log.warning("cannot watch Telegram polling: a failure there will not stop the bot")
        await asyncio.Event().wait()
    await asyncio.wait([polling])  # waits without cancelling it when this is cancelled
    polling.result()


@contextlib.asynccontextmanager
async def _telegram(service: HashtagService, tokens: Tokens, args: argparse.Namespace):
    """Polling, or with --telegram-webhook-url PTB's webhook server (removed on the way out)."""
    from bot.adapters.telegram_bot import ALLOWED_UPDATES, build_application, publish_commands

    application = build_application(
        service, tokens.telegram, os.environ.get("TELEGRAM_API_URL"), args.privacy_contact
    )
    webhook = args.telegram_webhook_url
    async with application:
        await application.start()
        await publish_commands(application.bot)
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
        try:
            yield application
        finally:
            if application.updater.running:
                await application.updater.stop()
            if webhook:  # Telegram would keep posting to a bot that is gone
                await application.bot.delete_webhook()
            await application.stop()


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
        privacy_contact=args.privacy_contact,
    )
    # discord.py reconnects by itself; the task ends early only when it cannot go on (a
    # rejected token, a refused intent), which the supervisor turns into an exit.
    supervisor.start("discord", client.start(token), essential=True)
    log.info("Discord bot is starting")
    try:
        yield client
    finally:
        await client.close()
