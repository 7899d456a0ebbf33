"""The running bot takes new heads without a restart.

`CheckpointWatcher` notices that the checkpoint directory it serves was replaced (written
elsewhere, then renamed into place, as `python -m finetune feedback` does), loads it on a
worker thread and swaps it into the engine between batches. A checkpoint that fails to load is
refused with the reason in the log, and the old head keeps serving. Nothing that goes wrong
with one check stops the watching: it is logged, and later checks still run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from bot.operations import metrics
from inference.backends.exported import ONNX_FILE
from inference.engine import InferenceEngine, Servable
from inference.spec import CONFIG_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

# Loads a checkpoint directory for serving: (model on the engine's device, its version).
CheckpointLoader = Callable[[Path], tuple[Servable, str]]


def checkpoint_stamp(directory: Path) -> tuple | None:
    """What changes when a checkpoint is replaced; None while it is not (yet) a checkpoint.

    Raises OSError when the files are there but cannot be read (e.g. PermissionError): that is
    no "no checkpoint", and a caller must not quietly fall back to the base model for it.
    """
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
        self._unreadable: str | None = None  # why the last look at the directory failed

    async def run(self) -> None:
        """Check every `interval` seconds until cancelled; one failed check never ends it."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a bug of ours, not the checkpoint's: still, keep serving
                log.exception("checking %s for a new checkpoint failed", self.directory)

    async def check(self) -> bool:
        """Swap in the checkpoint if it changed since last seen; True when it was swapped."""
        try:
            stamp = checkpoint_stamp(self.directory)
        except OSError as error:
            # Logged once per reason, not every interval; looked at again each interval, since
            # only a readable directory can show that it changed.
            if str(error) != self._unreadable:
                self._unreadable = str(error)
                log.error(
                    "cannot read the checkpoint in %s: %s. Still serving %s.",
                    self.directory,
                    error,
                    self.engine.model_version,
                )
            return False
        self._unreadable = None
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp  # a broken checkpoint is tried again only once it changes again
        previous = self.engine.model_version
        try:
            model, version = await asyncio.to_thread(self._load, self.directory)
            self.engine.swap_model(model, version)
        except Exception as error:  # whatever is wrong with it, the old head keeps serving
            metrics.MODEL_SWAPS.labels("refused").inc()
            log.error(
                "refused the new checkpoint in %s: %s. Still serving %s.",
                self.directory,
                error,
                self.engine.model_version,
            )
            return False
        metrics.MODEL_SWAPS.labels("swapped").inc()
        log.info("swapped in %s (was %s)", version, previous)
        return True
