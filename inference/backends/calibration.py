"""Photos the package makes itself, and the test a faster engine must pass against fp32.

A faster engine (bf16, int8) is only kept when it gives the hashtags fp32 gives: the product
promises the same suggestions whichever engine serves them. The photos are generated (no photo
is shipped, none can be downloaded) and go through the same JPEG decode and preprocessing as a
person's photo, so the engine sees real model inputs, not noise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from inference.images import ImageLimits, decode_image
from inference.spec import ModelSpec

CALIBRATION_PHOTOS = 64
# The bar: a candidate must keep embeddings this close and the same top-5 hashtag sets
# on this share of the calibration photos (with 64 photos: at most one differs).
MIN_COSINE, MIN_TOP5_AGREEMENT, TOP_K = 0.999, 0.98, 5


def calibration_photos(count: int = CALIBRATION_PHOTOS, seed: int = 0) -> list[bytes]:
    """Seeded, varied JPEGs of 320x240: a sky-to-ground gradient, shapes, stripes and grain.

    Varied on purpose: near-identical inputs would make every engine agree (or disagree) for
    the same reason, and tell nothing about the photos people send.
    """
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        width, height = 320, 240
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        rows = np.linspace(0, 1, height)[:, None, None]
        pixels = top * (1 - rows) + bottom * rows + np.zeros((height, width, 3))
        if rng.random() < 0.5:  # stripes: texture a flat gradient lacks
            period = rng.integers(6, 40)
            pixels += 40 * np.sin(np.arange(width) * 2 * np.pi / period)[None, :, None]
        pixels += rng.normal(0, rng.uniform(2, 25), pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(1, 6)):
            x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
            box = (x0, y0, x0 + rng.integers(20, 160), y0 + rng.integers(20, 120))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def calibration_batch(spec: ModelSpec, count: int = CALIBRATION_PHOTOS) -> np.ndarray:
    """The calibration photos as the model's (count, C, H, W) float32 input."""
    transform, limits = spec.eval_transform(), ImageLimits()
    return np.stack(
        [
            transform(decode_image(data, limits, spec.input_side))
            for data in calibration_photos(count)
        ]
    )


@dataclass(frozen=True)
class Agreement:
    """How closely an engine's outputs follow the fp32 reference on the same inputs."""

    min_cosine: float  # the worst photo's embedding cosine to fp32
    top5_agreement: float  # share of photos with the same set of top-5 hashtags

    @property
    def acceptable(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.top5_agreement >= MIN_TOP5_AGREEMENT

    def describe(self) -> str:
        return f"cosine >= {self.min_cosine:.5f}, same top-5 on {self.top5_agreement:.0%}"


def agreement(
    scores: np.ndarray, embeddings: np.ndarray, reference: tuple[np.ndarray, np.ndarray]
) -> Agreement:
    """Compare (scores, embeddings) with the fp32 reference's, photo by photo."""
    reference_scores, reference_embeddings = reference
    a, b = embeddings.astype(np.float32), reference_embeddings.astype(np.float32)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    same = [
        set(top_indices(mine)) == set(top_indices(theirs))
        for mine, theirs in zip(scores, reference_scores, strict=True)
    ]
    return Agreement(float(cosine.min()), float(np.mean(same)))


def top_indices(scores: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """The k best hashtags' indices, ties broken by position, as `Prediction.top` does."""
    return np.argsort(-scores, kind="stable")[:k]
