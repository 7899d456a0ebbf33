"""Photos whose hashtags can be seen, for learning from answers without HARRISON's images.

Each hashtag paints a disc of its own colour in a place of its own (with jitter), over scene
content that no hashtag names (a random smooth background). A real encoder (the tests' tiny
random CLIP) sees the hashtags only through the pixels, so the embeddings are not a function of
the hashtags, and its zero-shot head knows nothing of them: whatever a re-fit gets right, it
learned from the answers. Used by tests/test_learning_journey.py and benchmarks/learning.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Twelve HARRISON hashtags, most popular first (how often a photo carries each).
TAGS = (
    "dog", "beach", "sunset", "food", "flower", "car", "snow", "city", "cat", "coffee", "tree",
    "sea",
)  # fmt: skip
POPULARITY = np.array([0.30, 0.25, 0.2, 0.18, 0.15, 0.12, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05])
COLOURS = np.random.default_rng(123).integers(0, 256, size=(len(TAGS), 3))


@dataclass(frozen=True)
class TaggedPhoto:
    image: Image.Image
    tags: tuple[str, ...]  # the hashtags it shows


def tagged_photo(rng: np.random.Generator, side: int = 64) -> TaggedPhoto:
    """One to three hashtags, drawn by popularity, painted over a random scene."""
    count = int(rng.integers(1, 4))
    chosen = sorted(
        rng.choice(len(TAGS), size=count, replace=False, p=POPULARITY / POPULARITY.sum())
    )
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.uniform(0, 6.3)
        channels.append(127 + 50 * np.sin(x * fx * 6.3 + phase) * np.cos(y * fy * 6.3))
    image = Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    radius = side / 4
    for tag in chosen:
        cx = (tag % 4) * side / 4 + side / 8 + rng.normal(0, side / 20)
        cy = (tag // 4) * side / 3 + side / 6 + rng.normal(0, side / 20)
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, fill=tuple(int(c) for c in COLOURS[tag]))
    return TaggedPhoto(image, tuple(TAGS[tag] for tag in chosen))


def tagged_photos(count: int, seed: int) -> list[TaggedPhoto]:
    rng = np.random.default_rng(seed)
    return [tagged_photo(rng) for _ in range(count)]
