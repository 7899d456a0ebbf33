"""Train / validation / test splits that can be written down and reproduced.

The HARRISON paper tests on 5,000 of its 57,383 images; smaller datasets get the same
proportion. Validation (for early stopping, the WiSE-FT blend and thresholds) is taken from
the training part, the same size as the test part.

Byte-identical image files are one image: only the first listed copy is split (duplicate_groups),
so that no photo is both trained on and tested on. How many copies were left out is written in
split.json as `duplicates_removed` (0 in a split.json written before this was counted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    duplicates_removed: int = 0  # byte-identical copies of listed images, left out

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


def duplicate_groups(digests: Sequence[str | None]) -> list[list[int]]:
    """Indices grouped by identical content digest, each group in listed order and the groups
    in the order of their first member; a file without a digest (unreadable) is alone."""
    groups: list[list[int]] = []
    group_of: dict[str, list[int]] = {}
    for index, digest in enumerate(digests):
        if digest is not None and digest in group_of:
            group_of[digest].append(index)
            continue
        groups.append([index])
        if digest is not None:
            group_of[digest] = groups[-1]
    return groups


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
