"""`python -m bot --learn-every HOURS`: the running bot learns new heads itself.

`Learner` runs the same re-fit as `python -m finetune feedback` on the bot's own database, on
a worker thread and its own database connection, so chats go on meanwhile; a head that passes
the gate is written into the directory a CheckpointWatcher serves, and swapped in by it. This
module needs torch, so the bot imports it only when learning is switched on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from bot.operations.checkpoints import CheckpointWatcher, checkpoint_stamp
from bot.store import Store
from finetune.feedback import FeedbackOptions, NotEnoughAnswers
from finetune.learn import learn_round, training_copy
from inference.engine import InferenceEngine
from inference.loading import load_checkpoint
from inference.model import HashtagModel

log = logging.getLogger(__name__)


class Learner:
    def __init__(
        self,
        engine: InferenceEngine,
        db: Path,
        watcher: CheckpointWatcher,
        every_hours: float,
        started_from: Callable[[], str],
        load_base: Callable[[], HashtagModel],
        options: FeedbackOptions | None = None,
    ):
        """Writes into the directory `watcher` serves. `started_from()`: the served head's
        version without backend details (what the learned head records as its origin);
        `load_base()`: the torch model the options name (a checkpoint or the zero-shot model),
        served until a head has been learned; needed when the engine serves ONNX."""
        self.engine, self.db, self.watcher = engine, db, watcher
        self.every_hours, self.started_from = every_hours, started_from
        self.options = options or FeedbackOptions()
        self.load_base = load_base

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
        # The ONNX backend holds no torch weights: load what it serves.
        if checkpoint_stamp(self.watcher.directory) is not None:
            return load_checkpoint(self.watcher.directory)
        return self.load_base()
