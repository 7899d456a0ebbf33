"""The running bot takes new heads without a restart, and can learn them itself.

- `CheckpointWatcher` notices that the checkpoint directory it serves was replaced (written
  elsewhere, then renamed into place, as `python -m finetune feedback` does), loads it on a
  worker thread and swaps it into the engine between batches. A checkpoint that fails to load
  is refused with the reason in the log, and the old head keeps serving.
- `Learner` (`python -m bot --learn-every HOURS`) runs the same re-fit as `python -m finetune
  feedback` on the bot's own database, on a worker thread and its own database connection, so
  chats go on meanwhile; a head that passes the gate is written and swapped in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from bot import metrics
from bot.store import Store
from finetune.feedback import FeedbackOptions, NotEnoughAnswers
from finetune.learn import learn_round, training_copy
from inference.engine import InferenceEngine
from inference.loading import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from inference.model import HashtagModel
from inference.onnx_backend import ONNX_FILE

log = logging.getLogger(__name__)

# Loads a checkpoint directory for serving: (model on the engine's device, its version).
CheckpointLoader = Callable[[Path], tuple[HashtagModel, str]]


def checkpoint_stamp(directory: Path) -> tuple | None:
    """What changes when a checkpoint is replaced; None while it is not (yet) a checkpoint."""
    stamp = []
    for name in (CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE):
        try:
            info = (directory / name).stat()
        except FileNotFoundError:
            if name == ONNX_FILE:
                continue
            return None
        stamp.append((name, info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamp)


class CheckpointWatcher:
    def __init__(
        self,
        engine: InferenceEngine,
        directory: Path,
        load: CheckpointLoader,
        interval: float = 10.0,
        served_stamp: tuple | None = None,
    ):
        """`served_stamp`: the stamp of what the engine serves now (taken before loading it)."""
        self.engine, self.directory, self._load = engine, Path(directory), load
        self.interval = interval
        self._seen = served_stamp

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Swap in the checkpoint if it changed since last seen; True when it was swapped."""
        stamp = checkpoint_stamp(self.directory)
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp  # a broken checkpoint is tried again only once it changes again
        try:
            model, version = await asyncio.to_thread(self._load, self.directory)
        except Exception as error:  # whatever is wrong with it, the old head keeps serving
            metrics.MODEL_SWAPS.labels("refused").inc()
            log.warning(
                "refused the new checkpoint in %s: %s. Still serving %s.",
                self.directory,
                error,
                self.engine.model_version,
            )
            return False
        previous = self.engine.model_version
        self.engine.swap_model(model, version)
        metrics.MODEL_SWAPS.labels("swapped").inc()
        log.info("swapped in %s (was %s)", version, previous)
        return True


class Learner:
    def __init__(
        self,
        engine: InferenceEngine,
        db: Path,
        watcher: CheckpointWatcher,
        every_hours: float,
        started_from: Callable[[], str],
        options: FeedbackOptions | None = None,
        base_checkpoint: Path | None = None,
    ):
        """Writes into the directory `watcher` serves. `started_from()`: the served head's
        version without backend details (what the learned head records as its origin);
        `base_checkpoint`: the operator's checkpoint, served until a head has been learned."""
        self.engine, self.db, self.watcher = engine, db, watcher
        self.every_hours, self.started_from = every_hours, started_from
        self.options = options or FeedbackOptions()
        self.base_checkpoint = base_checkpoint

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_hours * 3600)
            await self.learn_once()

    async def learn_once(self) -> bool:
        """One re-fit; True when a new head was written and swapped in. Never raises: a
        failed round is logged and the current head keeps serving."""
        directory = self.watcher.directory
        onnx = not isinstance(self.engine.model, HashtagModel)
        try:
            model = await asyncio.to_thread(self._training_model)
            store = await Store.open(self.db)  # its own connection: chats keep theirs
            try:
                result = await learn_round(
                    store,
                    model,
                    self.started_from(),
                    directory,
                    self.options,
                    with_onnx=onnx,  # the ONNX backend serves model.onnx: write one too
                )
            finally:
                await store.close()
        except NotEnoughAnswers as reason:
            log.info("not learning yet: %s", reason)
            return False
        except Exception:
            log.exception("learning from feedback failed; the current head keeps serving")
            return False
        gate = result.report["held_out"]
        log.info(
            "learned from %d answers: precision@1 %.3f -> %.3f, recall@5 %.3f -> %.3f (%s)",
            result.report["answers"]["used"],
            gate["current"]["precision@1"],
            gate["refitted"]["precision@1"],
            gate["current"]["recall@5"],
            gate["refitted"]["recall@5"],
            "written" if result.passed else "worse on the newest answers: not used",
        )
        return result.passed and await self.watcher.check()

    def _training_model(self) -> HashtagModel:
        """The served head with its encoder, as float32 on the CPU."""
        served = self.engine.model
        if isinstance(served, HashtagModel):
            return training_copy(served)
        # The ONNX backend holds no torch weights: read the checkpoint it serves.
        learned = checkpoint_stamp(self.watcher.directory) is not None
        return load_checkpoint(self.watcher.directory if learned else self.base_checkpoint)
