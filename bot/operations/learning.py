"""`python -m bot --learn-every HOURS`: the running bot learns new heads itself.

Each round runs `python -m finetune feedback` on the bot's own database as a child process,
with the options the bot was started with: the same re-fit, gate and community rules as by
hand, on top of the base model. A head that passes is written into the directory a
CheckpointWatcher serves, and swapped in by it.

A child process, rather than a thread, because:
- the serving process never imports torch or the exporter (finetune/ imports bot.store, never
  the other way round), so a CPU bot stays as lean while it learns;
- a shutdown ends a round at once: the child is terminated, and the half-written staging
  folder it leaves is cleared by the next writer (inference/staging.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bot.operations.checkpoints import CheckpointWatcher, checkpoint_stamp
from inference.options import without_model_variables

log = logging.getLogger(__name__)

# `python -m finetune feedback`'s exit statuses.
WRITTEN, REFUSED, CANNOT_LEARN = 0, 1, 2
# How long a terminated round may take to exit before it is killed.
TERMINATE_GRACE_SECONDS = 3.0


class Learner:
    def __init__(
        self,
        command: Callable[[], Sequence[str]],
        watcher: CheckpointWatcher,
        every_hours: float,
        environment: dict[str, str] | None = None,
    ):
        """`command()`: the `python -m finetune feedback ...` command line of the next round
        (it changes once a learned head exists); `environment`: the child's variables (the
        database location travels here, so a password never shows in a process list)."""
        self.command, self.watcher, self.every_hours = command, watcher, every_hours
        self.environment = environment

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_hours * 3600)
            await self.learn_once()

    async def learn_once(self) -> bool:
        """One round; True when a new head was written and swapped in. A round that cannot
        learn, is refused or fails in any way is logged, and the current head keeps serving:
        a failure never ends the learner, so the next round still runs."""
        try:
            return await self._round()
        except Exception as error:  # cancellation (a shutdown) is no Exception: it goes on up
            log.error(
                "a learning round failed: %s; the current head keeps serving", error, exc_info=True
            )
            return False

    async def _round(self) -> bool:
        child = await asyncio.create_subprocess_exec(
            *self.command(),
            stdout=asyncio.subprocess.DEVNULL,  # its table: metrics.json holds the same
            stderr=asyncio.subprocess.PIPE,
            env=self.environment,
        )
        try:
            _, errors = await child.communicate()
        except asyncio.CancelledError:
            await _stop(child)
            raise
        said = errors.decode(errors="replace").strip().splitlines()
        if child.returncode == CANNOT_LEARN:
            log.info("not learning yet: %s", said[-1] if said else "no reason given")
            return False
        if child.returncode not in (WRITTEN, REFUSED):
            log.error(
                "learning from feedback failed (exit status %s); the current head keeps "
                "serving. Its last words: %s",
                child.returncode,
                " | ".join(said[-3:]) or "none",
            )
            return False
        for line in said:  # damaged rows that were left out, and other warnings
            log.warning("learning: %s", line)
        self._log_round(child.returncode == WRITTEN)
        return child.returncode == WRITTEN and await self.watcher.check()

    def _log_round(self, written: bool) -> None:
        try:
            report = json.loads((Path(self.watcher.directory) / "metrics.json").read_text())
            gate = report["held_out"]
        except (OSError, ValueError, KeyError):
            log.warning("learning: the round left no readable metrics.json")
            return
        log.info(
            "learned from %d answers: precision@1 %.3f -> %.3f, recall@5 %.3f -> %.3f (%s)",
            report["answers"]["used"],
            gate["current"]["precision@1"],
            gate["refitted"]["precision@1"],
            gate["current"]["recall@5"],
            gate["refitted"]["recall@5"],
            "written" if written else "worse on the held-out answers: not used",
        )


async def _stop(child: asyncio.subprocess.Process) -> None:
    """End a round now: SIGTERM, then SIGKILL if it does not exit within the grace period."""
    if child.returncode is not None:
        return
    child.terminate()
    try:
        await asyncio.wait_for(child.wait(), TERMINATE_GRACE_SECONDS)
    except TimeoutError:
        child.kill()
        await child.wait()


def child_environment(db: str) -> dict[str, str]:
    """The bot's environment without its tokens, with the database to learn from. Without the
    model variables either: the round's command line names its model (feedback_command)."""
    environment = {name: value for name, value in os.environ.items() if not name.endswith("_TOKEN")}
    environment = without_model_variables(environment)
    environment["HASHTAG_DB"] = db
    return environment


def feedback_command(
    directory: Path,
    model_options: Sequence[str],
    sharing_options: Sequence[str],
    with_onnx: bool,
) -> Callable[[], list[str]]:
    """The command line of each round: learned on top of the base the options name, judged
    against the head served now (the learned one in `directory` carries that base)."""

    def command() -> list[str]:
        served = ["--checkpoint", str(directory)] if checkpoint_stamp(directory) else []
        return [
            sys.executable,
            "-m",
            "finetune",
            "feedback",
            "--out",
            str(directory),
            *(served or model_options),
            *sharing_options,
            *(["--onnx"] if with_onnx else []),
        ]

    return command
