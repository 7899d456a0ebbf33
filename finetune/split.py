"""Train / validation / test splits that can be written down and reproduced.

The HARRISON paper tests on 5,000 of its 57,383 images; smaller datasets get the same
proportion. Validation (for early stopping, the WiSE-FT blend and thresholds) is taken from
the training part, the same size as the test part.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HARRISON_IMAGES, HARRISON_TEST_IMAGES = 57_383, 5_000
SPLIT_FILE = "split.json"


@dataclass
class Split:
    seed: int
    train: list[str]
    val: list[str]
    test: list[str]

    def save(self, directory: Path) -> None:
        (directory / SPLIT_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Split:
        return cls(**json.loads((directory / SPLIT_FILE).read_text(encoding="utf-8")))


def held_out_count(total: int, test_size: float | None) -> int:
    """`--test-size`: a count (>= 1), a fraction (< 1), or None for the paper's proportion."""
    if test_size is None:
        count = min(HARRISON_TEST_IMAGES, round(total * HARRISON_TEST_IMAGES / HARRISON_IMAGES))
    elif test_size < 1:
        count = round(total * test_size)
    else:
        count = int(test_size)
    count = max(1, count)
    if 2 * count >= total:
        raise ValueError(
            f"a test part of {count} (and a validation part as large) leaves no training "
            f"images out of {total}; lower --test-size"
        )
    return count


def random_split(names: list[str], test_size: float | None, seed: int) -> Split:
    order = np.random.default_rng(seed).permutation(len(names))
    held_out = held_out_count(len(names), test_size)
    shuffled = [names[i] for i in order]
    return Split(
        seed=seed,
        test=shuffled[:held_out],
        val=shuffled[held_out : 2 * held_out],
        train=shuffled[2 * held_out :],
    )
