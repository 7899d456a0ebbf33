"""Small datasets in HARRISON's layout, drawn from HARRISON's label statistics.

Tag lists come from benchmarks/harrison.py (per topic, how often each hashtag was used), so
how many tags an image has and which are common, rare or outside the vocabulary follow the real
data. `write_synthetic_harrison` also draws each image so that a tiny model can learn it: its
vocabulary tag i lights up cell i of a 4x4 grid, one ViT patch per cell at 32 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.harrison import TagLists, TopicStatistics

GRID = 4
VOCAB_SIZE = GRID * GRID


def draw_labels(count: int, seed: int, vocabulary: list[str] | None = None):
    """(HARRISON-style image names, tag lists); with `vocabulary`, only lists that hold one
    of its hashtags."""
    rng, lists = np.random.default_rng(seed), TagLists()
    known = set(vocabulary or [])
    names, tag_lists = [], []
    while len(names) < count:
        topic = lists.pick_topic(rng)
        tags = lists.draw(rng, topic)
        if known and not known.intersection(tags):
            continue
        names.append(f"instagram_dataset/{topic}/image_{len(names)}.jpg")
        tag_lists.append(tags)
    return names, tag_lists


def write_label_files(folder: Path, names: list[str], tag_lists: list[list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data_list.txt").write_text("\n".join(names) + "\n")
    # HARRISON's own files end each line with a space.
    (folder / "tag_list.txt").write_text("".join(" ".join(tags) + " \n" for tags in tag_lists))


def write_synthetic_harrison(folder: Path, count: int, seed: int = 0) -> list[str]:
    """Write `count` images with their lists under `folder`; returns the vocabulary."""
    frequency = TopicStatistics.load().frequency()
    vocabulary = [tag for tag, _ in sorted(frequency.items(), key=lambda i: (-i[1], i[0]))]
    vocabulary = vocabulary[:VOCAB_SIZE]
    position = {tag: i for i, tag in enumerate(vocabulary)}
    names, tag_lists = draw_labels(count, seed, vocabulary)
    rng = np.random.default_rng(seed + 1)
    for name, tags in zip(names, tag_lists, strict=True):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(tags, position, rng).save(path, quality=92)
    write_label_files(folder, names, tag_lists)
    (folder / "vocab_index.txt").write_text(
        "".join(f"{tag:<22}{i}\n" for i, tag in enumerate(vocabulary))
    )
    return vocabulary


def draw(tags: list[str], position: dict[str, int], rng: np.random.Generator) -> Image.Image:
    cell = 16
    pixels = rng.normal(60, 20, size=(GRID * cell, GRID * cell, 3))
    for tag in tags:
        if tag in position:
            row, col = divmod(position[tag], GRID)
            pixels[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = rng.normal(
                220, 15, size=3
            )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
