"""Long-lived background work that nobody would otherwise hear fail.

Each platform client, the checkpoint watcher and the learner runs as a named task here. When
one ends on its own, the reason is logged at ERROR and kept for /healthz; when it was
essential (a platform client: the bot can no longer do its job), the process is told to stop
with a non-zero exit code, 2 when the operator has something to fix (a rejected token).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

EXIT_FAILED, EXIT_FIX_SETTINGS = 1, 2


def what_to_do(error: BaseException) -> tuple[str, int]:
    """The reason an essential task ended, for the operator, and the exit code it means."""
    import discord  # here, so a Telegram-only bot does not load discord.py at start
    from telegram.error import InvalidToken

    if isinstance(error, discord.LoginFailure):
        return (
            "DISCORD_BOT_TOKEN was rejected: copy it again from "
            "https://discord.com/developers/applications (your app, Bot, Reset Token)",
            EXIT_FIX_SETTINGS,
        )
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return (
            "Discord refused the Message Content intent: turn it on in the developer portal "
            "(your app, Bot, Privileged Gateway Intents), or drop --discord-channels",
            EXIT_FIX_SETTINGS,
        )
    if isinstance(error, InvalidToken):  # a 401, or a 404 when the URL is not a Bot API
        api_url = os.environ.get("TELEGRAM_API_URL")
        if api_url:
            return (
                f"TELEGRAM_BOT_TOKEN was rejected, or TELEGRAM_API_URL ({api_url}) is not a Bot "
                "API server: check both (ask @BotFather for the token again)",
                EXIT_FIX_SETTINGS,
            )
        return "TELEGRAM_BOT_TOKEN was rejected: ask @BotFather for the token again", (
            EXIT_FIX_SETTINGS
        )
    return f"{type(error).__name__}: {error}", EXIT_FAILED


class Supervisor:
    def __init__(self) -> None:
        self.failures: dict[str, str] = {}  # task name -> why it ended, for /healthz
        self.failed = asyncio.Event()  # an essential task ended: the process should stop
        self.exit_code = 0
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def start(self, name: str, work: Coroutine[Any, Any, object], essential: bool) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(functools.partial(self._ended, name, essential))
        self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel what still runs; what ends from now on is the shutdown, not a failure."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stopping(self) -> None:
        """The shutdown has begun: clients closing now are not failing."""
        self._stopping = True

    def _ended(self, name: str, essential: bool, task: asyncio.Task) -> None:
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        if error is None:
            reason, code = "stopped by itself", EXIT_FAILED
        else:
            reason, code = what_to_do(error)
        self.failures[name] = reason
        log.error("%s failed: %s", name, reason, exc_info=error if code == EXIT_FAILED else None)
        if essential:
            self.exit_code = self.exit_code or code
            self.failed.set()
