"""One round of learning from feedback, as `python -m finetune feedback` runs it (and the bot's
`--learn-every`, which runs that command): on the answers read from the store, re-fit the head
on top of the base model, judge it against the served head, write it if it passed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bot.store import AnsweredPhoto, Store
from bot.store.records import AnsweredPhotos
from finetune.feedback import FeedbackOptions, RefitResult, refit_head
from finetune.publish import publish_checkpoint, write_metrics
from inference.model import HashtagModel


@dataclass
class Models:
    """What a round needs: the base it learns on top of, and the head served now."""

    base: HashtagModel
    base_version: str
    current: HashtagModel
    current_version: str
    current_learned_from: np.ndarray | None = None  # when the current head is a learned one


async def read_answers(store: Store, base: HashtagModel) -> AnsweredPhotos:
    """The answered photos `base`'s encoder made; a row whose embedding is not of the size that
    encoder makes is damaged, however many such rows there are."""
    return await store.answered_photos(base.encoder_id, dim=base.head.in_features)


async def learn_round(
    answered: AnsweredPhotos,
    models: Models,
    out: Path,
    options: FeedbackOptions,
    *,
    force: bool = False,
    with_onnx: bool = False,
    device: torch.device | None = None,
) -> RefitResult:
    """Re-fit from `answered` (see read_answers); write the checkpoint to `out` when it passed
    the gate, when the current head learned from answers that are gone (a /forget, an undo), or
    with `force`; else only `out/metrics.json`."""
    gone = _gone(models.current_learned_from, answered.photos)
    result = await asyncio.to_thread(
        refit_head,
        models.base,
        answered.photos,
        options,
        models.base_version,
        models.current,
        models.current_version,
        device=device,
        skipped=answered.other_encoder,
        damaged=len(answered.damaged),
    )
    result.report["answers_gone_since_current"] = gone
    result.report["written"] = result.passed or force or gone > 0
    if result.report["written"]:
        await asyncio.to_thread(
            publish_checkpoint,
            result.model,
            out,
            result.report,
            with_onnx,
            base=(models.base, models.base_version),
            learned_from=result.learned_from,
        )
    else:
        await asyncio.to_thread(write_metrics, Path(out), result.report)
    return result


def _gone(learned_from: np.ndarray | None, photos: list[AnsweredPhoto]) -> int:
    """How many answered photos the current head learned from are no longer answered."""
    if learned_from is None or not len(learned_from):
        return 0
    present = np.array([photo.suggestion_id for photo in photos], dtype=np.int64)
    return int(np.setdiff1d(learned_from, present, assume_unique=False).size)
