"""A small dataset in HARRISON's layout that a tiny model can learn.

Tag lists are real lines of HARRISON's `tag_list.txt`, so label statistics (how many tags per
image, which tags go together, out-of-vocabulary tags) are the real ones. Each image draws its
vocabulary tags: tag i lights up cell i of a 4x4 grid, one ViT patch per cell at 32 px.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

GRID = 4
VOCAB_SIZE = GRID * GRID


def harrison_labels_dir() -> Path:
    configured = os.environ.get("HARRISON_LABELS_DIR")
    return (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[2] / "shared" / "harrison"
    )


def read_real_tag_lists() -> tuple[list[str], list[list[str]]]:
    folder = harrison_labels_dir()
    paths = (folder / "data_list.txt").read_text().split("\n")
    tags = (folder / "tag_list.txt").read_text().split("\n")
    pairs = [(p.strip(), t.split()) for p, t in zip(paths, tags, strict=False) if p.strip()]
    return [p for p, _ in pairs], [t for _, t in pairs]


def write_synthetic_harrison(folder: Path, count: int, seed: int = 0) -> list[str]:
    """Write `count` images with their lists under `folder`; returns the vocabulary."""
    names, tag_lists = read_real_tag_lists()
    counts = Counter(tag for tags in tag_lists for tag in tags)
    vocabulary = [tag for tag, _ in counts.most_common(VOCAB_SIZE)]
    position = {tag: i for i, tag in enumerate(vocabulary)}
    usable = [i for i, tags in enumerate(tag_lists) if any(tag in position for tag in tags)]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(usable, size=count, replace=False)

    data_lines, tag_lines = [], []
    for index in chosen:
        name = names[index]
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(tag_lists[index], position, rng).save(path, quality=92)
        data_lines.append(name)
        tag_lines.append(" ".join(tag_lists[index]) + " ")  # HARRISON's trailing space
    (folder / "data_list.txt").write_text("\n".join(data_lines) + "\n")
    (folder / "tag_list.txt").write_text("\n".join(tag_lines) + "\n")
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
