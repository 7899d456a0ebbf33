"""Decoding training images and embedding them, with a disk cache for the frozen encoder.

The linear probe needs each image's embedding once. Embeddings are cached by image *content*
(SHA-256 of the file) per encoder, in shards written as they are computed: an interrupted run
loses at most one shard, and a second run, or one on a re-ordered copy of the data, reuses them.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from finetune.precision import EmbeddingPrecision, embedder
from inference.images import ImageLimits, ImageRejected, decode_image
from inference.model import HashtagModel

log = logging.getLogger(__name__)

SHARD_SIZE = 2048


class ImageFiles(Dataset):
    """(index, pixels) per image file; (index, None) for files that cannot be used.

    HARRISON has known broken files: they are skipped and counted, never fatal.
    """

    def __init__(self, paths: Sequence[Path | None], transform: Callable, min_side: int | None):
        self.paths, self.transform, self.min_side = paths, transform, min_side
        self.limits = ImageLimits(max_bytes=200 * 1024 * 1024, max_pixels=180_000_000)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        path = self.paths[index]
        if path is None:
            return index, None
        try:
            image = decode_image(path.read_bytes(), self.limits, min_side=self.min_side)
        except (ImageRejected, OSError) as error:
            log.debug("skipping %s: %s", path, error)
            return index, None
        return index, self.transform(image)


def collate_readable(batch: list[tuple[int, torch.Tensor | None]]):
    """Batch the readable images; unreadable ones drop out here."""
    readable = [(index, pixels) for index, pixels in batch if pixels is not None]
    if not readable:
        return torch.empty(0, dtype=torch.long), None
    indices, pixels = zip(*readable, strict=True)
    return torch.tensor(indices), torch.stack(pixels)


def image_loader(
    files: ImageFiles, batch_size: int, workers: int, shuffle: bool = False, seed: int = 0
):
    return DataLoader(
        files,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_readable,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


@torch.inference_mode()
def embed_images(
    model: HashtagModel,
    paths: Sequence[Path | None],
    *,
    batch_size: int,
    workers: int,
    cache_folder: Path | None = None,
    description: str = "embedding",
    precision: EmbeddingPrecision | None = None,
    digests: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 (n, D), readable bool (n,)) for the images at `paths`.

    The encoder runs in the model's own precision, or in `precision`'s choice (bf16 where this
    CPU measured faster and in agreement); the choice is made only if an image is not cached.
    `digests`: the files' file_digests when the caller has them already (not read again).
    """
    embed_dim = model.head.in_features
    embeddings = np.zeros((len(paths), embed_dim), dtype=np.float32)
    readable = np.zeros(len(paths), dtype=bool)

    cache = EmbeddingCache(cache_folder) if cache_folder else None
    if not cache:
        digests = [None] * len(paths)
    elif digests is None:
        digests = file_digests(paths)
    known = cache.load() if cache else {}
    todo = []
    for index, digest in enumerate(digests):
        if digest is not None and digest in known:
            embeddings[index], readable[index] = known[digest], True
        else:
            todo.append(index)
    if cache and len(todo) < len(paths):
        log.info("%d of %d embeddings found in the cache", len(paths) - len(todo), len(paths))

    files = ImageFiles(
        [paths[i] for i in todo], model.spec.image_transform(), model.spec.input_side
    )
    own_dtype = next(model.parameters()).dtype
    dtype = precision.dtype(model, batch_size) if precision is not None and todo else own_dtype
    embed = embedder(model, dtype)
    new_digests, new_vectors = [], []
    with tqdm(total=len(todo), desc=description, unit="image") as progress:
        for local_indices, pixels in image_loader(files, batch_size, workers):
            if pixels is not None:
                vectors = embed(pixels).cpu().numpy()
                rows = [todo[i] for i in local_indices.tolist()]
                embeddings[rows], readable[rows] = vectors, True
                if cache:
                    new_digests += [digests[row] for row in rows]
                    new_vectors.append(vectors)
                    if len(new_digests) >= SHARD_SIZE:
                        cache.add(new_digests, np.concatenate(new_vectors))
                        new_digests, new_vectors = [], []
            progress.update(min(batch_size, len(todo) - progress.n))  # unreadable ones too
    if cache and new_digests:
        cache.add(new_digests, np.concatenate(new_vectors))
    return embeddings, readable


def file_digests(paths: Sequence[Path | None]) -> list[str | None]:
    """SHA-256 of each file's bytes (None for a missing or unreadable one): the embedding
    cache's key, and how byte-identical copies are found before the split."""

    def digest(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None

    with ThreadPoolExecutor(4) as pool:
        return list(tqdm(pool.map(digest, paths), total=len(paths), desc="hashing", unit="image"))


class EmbeddingCache:
    """Embeddings of one encoder, keyed by image digest, as .npz shards in one folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self) -> dict[str, np.ndarray]:
        known: dict[str, np.ndarray] = {}
        for shard in sorted(self.folder.glob("*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    known.update(zip(data["digests"].tolist(), data["embeddings"], strict=True))
            except (OSError, ValueError, KeyError) as error:
                log.warning("ignoring damaged embedding shard %s (%s)", shard, error)
        return known

    def add(self, digests: list[str], vectors: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        partial = self.folder / f"{name}.tmp.npz"
        np.savez(partial, digests=np.array(digests), embeddings=vectors.astype(np.float32))
        partial.replace(self.folder / f"{name}.npz")  # whole shards only, even after a crash
