"""One round of learning from feedback, as `python -m finetune feedback` and the bot's
`--learn-every` run it: read the answers, re-fit the head, judge it, write it if it passed."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import torch

from bot.store import Store
from finetune.feedback import FeedbackOptions, RefitResult, refit_head
from finetune.publish import publish_checkpoint, write_metrics
from inference.model import HashtagModel


def training_copy(model: HashtagModel) -> HashtagModel:
    """`model` itself when it is already float32 on the CPU (re-fitting never changes it),
    else a float32 CPU copy, leaving the served model as it is."""
    parameter = next(model.parameters())
    if parameter.device.type == "cpu" and parameter.dtype == torch.float32:
        return model
    return copy.deepcopy(model).float().cpu()


async def learn_round(
    store: Store,
    model: HashtagModel,
    started_from: str,
    out: Path,
    options: FeedbackOptions,
    *,
    force: bool = False,
    with_onnx: bool = False,
    device: torch.device | None = None,
) -> RefitResult:
    """Re-fit from every answer in `store`; write the checkpoint to `out` when it passed the
    gate (or `force`), else only `out/metrics.json`. The heavy parts run in a worker thread,
    so a bot's chats go on meanwhile."""
    photos, skipped = await store.answered_photos(model.encoder_id)
    result = await asyncio.to_thread(
        refit_head, model, photos, options, started_from, device, skipped
    )
    result.report["written"] = result.passed or force
    if result.report["written"]:
        await asyncio.to_thread(publish_checkpoint, result.model, out, result.report, with_onnx)
    else:
        await asyncio.to_thread(write_metrics, Path(out), result.report)
    return result
