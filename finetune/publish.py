"""Writing a checkpoint directory in place of another, so that a bot watching it never sees
half of one: the new one is written beside it, then renamed into place.

The replaced directory is kept as `DIR.previous-<UTC time>` (the newest `keep` of them), which
is how a learned head is rolled back: move the bad one away and a previous one back.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from finetune.base_model import save_base_head, save_learned_from
from inference.loading import save_checkpoint
from inference.model import HashtagModel
from inference.staging import fresh_staging_dir

METRICS_FILE = "metrics.json"
PREVIOUS_MARK = ".previous-"

log = logging.getLogger(__name__)


def write_metrics(directory: Path, report: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{METRICS_FILE}.tmp"
    partial.write_text(json.dumps(report, indent=2), encoding="utf-8")
    partial.replace(directory / METRICS_FILE)


def publish_checkpoint(
    model: HashtagModel,
    directory: Path,
    report: dict,
    with_onnx: bool,
    keep: int = 3,
    base: tuple[HashtagModel, str] | None = None,
    learned_from: np.ndarray | None = None,
) -> Path:
    """Write `model` (+ metrics.json, + model.onnx when `with_onnx`, + for a learned head the
    `base` (model, version) it was learned on and the suggestion ids it `learned_from`) as
    `directory`, atomically for readers; returns where the replaced checkpoint went, or
    `directory` when there was none."""
    directory = Path(directory)
    staging = fresh_staging_dir(directory)
    save_checkpoint(model, staging)
    if base is not None:
        save_base_head(*base, staging)
    if learned_from is not None:
        save_learned_from(learned_from, staging)
    write_metrics(staging, report)
    if with_onnx:
        from finetune.export import export_checkpoint

        export_checkpoint(staging)
        # Served on this machine next: the CPU engine is chosen now, in the background, rather
        # than when the bot swaps it in.
        from inference.backends.choice import decision_for
        from inference.spec import ModelLoadError

        try:
            decision_for(staging)
        except ModelLoadError as error:  # the checkpoint is still good: the bot measures it
            log.warning("%s; the bot measures the engines when it swaps this in", error)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    previous = directory.parent / f"{directory.name}{PREVIOUS_MARK}{stamp}"
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    _prune(directory, keep)
    return previous if previous.exists() else directory


def _prune(directory: Path, keep: int) -> None:
    older = sorted(directory.parent.glob(f"{directory.name}{PREVIOUS_MARK}*"))
    for stale in older[: max(0, len(older) - keep)]:
        shutil.rmtree(stale, ignore_errors=True)
