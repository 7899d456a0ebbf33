"""The precision of fine-tuning's frozen-encoder embedding pass, chosen on a CPU by measurement.

Why measure instead of reading the CPU's name: bf16 on a CPU is about twice as fast as fp32
where the cores have bf16 instructions (AVX512_BF16, AMX) and several times slower where torch
has to emulate them, and which one a machine is depends on the CPU, the virtual machine's
exposed flags and torch's build. Timing both on a few photos answers it for this machine in
seconds, against the hour HARRISON's embedding pass takes.

Why check agreement as well: the embeddings feed the head that is trained and then served in
fp32, so bf16 is only used when it gives fp32's hashtags: the same bar a faster serving engine
must pass (`inference.backends.calibration`).

On a GPU nothing is measured: the pass keeps the model's own precision, as before.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.backends.calibration import (
    MIN_COSINE,
    MIN_TOP5_AGREEMENT,
    Agreement,
    agreement,
    calibration_batch,
)
from inference.model import HashtagModel

log = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# 32 photos keep the measurement to a few seconds for ViT-B-32 on a CPU; with 32 photos the
# 98 % top-5 bar means every photo keeps its top-5 hashtags.
CALIBRATION_COUNT = 32
# The first call picks kernels and allocates; a few photos do it (measured on ViT-B-32: a batch
# of 32 timed after 4 photos' warm-up runs as fast as the batches after it).
WARM_UP_PHOTOS = 4
# Below this, bf16's gain is within the noise of one timing and not worth its rounding.
MIN_SPEEDUP = 1.2

Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Measurement:
    """bf16 against fp32 on the calibration photos, on this machine."""

    speedup: float  # fp32 seconds / bf16 seconds for the same photos and batch size
    agreement: Agreement
    photos: int

    @property
    def accepted(self) -> bool:
        return self.agreement.acceptable and self.speedup >= MIN_SPEEDUP

    def describe(self) -> str:
        """The one log line naming the choice and why."""
        measured = f"{self.agreement.describe()} of {self.photos} calibration photos"
        if self.accepted:
            faster = f"{self.speedup:.1f}x faster than fp32 on this CPU"
            return f"embedding in bf16: {faster}, {measured}"
        if not self.agreement.acceptable:
            return (
                f"embedding in fp32: bf16 refused, its hashtags differ from fp32's ({measured}; "
                f"needs cosine >= {MIN_COSINE} and the same top-5 on "
                f"{MIN_TOP5_AGREEMENT:.0%}), though {self.speedup:.1f}x as fast on this CPU"
            )
        return (
            f"embedding in fp32: bf16 refused, {self.speedup:.1f}x as fast as fp32 on this CPU "
            f"(needs {MIN_SPEEDUP}x; {measured})"
        )


class EmbeddingPrecision:
    """The embedding pass's dtype: the one asked for, or on a CPU measured when first needed.

    One object serves a run's several passes (train, validation, test): the measurement runs
    once, and only if some image is not in the embedding cache.
    """

    def __init__(self, requested: str = "auto"):
        if requested not in PRECISION_CHOICES:
            raise ValueError(f"embedding precision must be one of {PRECISION_CHOICES}")
        self.requested = requested
        self._chosen: dict[tuple[str, str, int], torch.dtype] = {}

    def dtype(self, model: HashtagModel, batch_size: int) -> torch.dtype:
        device = next(model.parameters()).device
        key = (model.encoder_id, str(device), batch_size)
        if key not in self._chosen:
            self._chosen[key] = choose_embedding_dtype(model, device, batch_size, self.requested)
        return self._chosen[key]


def choose_embedding_dtype(
    model: HashtagModel, device: torch.device, batch_size: int, requested: str = "auto"
) -> torch.dtype:
    """fp32 or bf16 for embedding with `model` on `device`; logs one line saying which."""
    own = next(model.parameters()).dtype
    if requested != "auto":
        log.info("embedding in %s, as asked (not measured)", requested)
        return DTYPES[requested]
    if device.type != "cpu" or own != torch.float32:
        return own  # a GPU keeps its precision; a model already in low precision stays so
    measurement = measure_bf16(model, batch_size)
    (log.info if measurement.agreement.acceptable else log.warning)(measurement.describe())
    return torch.bfloat16 if measurement.accepted else torch.float32


@torch.inference_mode()
def measure_bf16(
    model: HashtagModel, batch_size: int, count: int = CALIBRATION_COUNT
) -> Measurement:
    """Embed the calibration photos with the fp32 model and a bf16 copy; time and compare.

    Both run at the pass's batch size (at most `count`), each after a warm-up. The hashtag
    scores of both come from the same fp32 head's weights, so only the encoder's precision
    differs. The head's biases are left out: the embeddings train a head whose biases are
    learned afresh, and the zero-shot head's popularity prior (inference/prior.py) would turn
    the top-5 comparison into a tie-break among hashtags of equal popularity, decided by the
    last digits of the image's own scores (a random tiny CLIP lost 2 of 32 photos that way
    at cosine 0.99994).
    """
    device = next(model.parameters()).device
    pixels = torch.from_numpy(calibration_batch(model.spec, count)).to(device)
    batch = max(1, min(batch_size, count))
    reference, fp32_seconds = timed_pass("fp32", embedder(model, torch.float32), pixels, batch)
    candidate, bf16_seconds = timed_pass("bf16", embedder(model, torch.bfloat16), pixels, batch)

    def scores(embeddings: torch.Tensor) -> np.ndarray:
        weight = model.head.weight
        return (embeddings.to(weight.dtype) @ weight.T).cpu().numpy()

    return Measurement(
        speedup=fp32_seconds / max(bf16_seconds, 1e-9),
        agreement=agreement(
            scores(candidate),
            candidate.cpu().numpy(),
            (scores(reference), reference.cpu().numpy()),
        ),
        photos=count,
    )


def timed_pass(
    precision: str, embed: Embed, pixels: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, float]:
    """(embeddings, seconds) of embedding `pixels` batch by batch, after a small warm-up.

    `precision` names the pass, so a test can stand in for the clock.
    """
    batches = pixels.split(batch_size)
    embed(batches[0][:WARM_UP_PHOTOS])  # not timed: the first call is not the pass's rate
    start = time.perf_counter()
    embeddings = torch.cat([embed(batch) for batch in batches])
    return embeddings, time.perf_counter() - start


def embedder(model: HashtagModel, dtype: torch.dtype) -> Embed:
    """pixels -> normalised float32 embeddings, the vision tower run in `dtype`.

    In the model's own dtype that is the model itself; in another, a copy of the vision tower
    cast to it, so the model (trained and saved in fp32 afterwards) is never touched.
    """
    weight = next(model.parameters())
    if dtype == weight.dtype:
        return lambda pixels: model.embed(pixels.to(weight.device, dtype)).float()
    visual = cast_copy(model.visual, dtype)
    return lambda pixels: F.normalize(visual(pixels.to(weight.device, dtype)).float(), dim=-1)


def cast_copy(visual: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of the vision tower with its weights in `dtype`."""
    return copy.deepcopy(visual).to(dtype)
