"""Where the zero-shot model's derived files live in the cache, and what they are keyed on.

The zero-shot model is derived from four inputs: the open_clip model, its weights, the
vocabulary and the hashtags' popularity prior (inference/prior.py). Two things made from them
are kept, because making them is slow: the hashtag head (tens of seconds through the text
tower) and the ONNX export that a CPU serves (seconds, and torch's memory). The key is
computed without importing torch, so a start that finds the export can serve it without
loading torch at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from inference.prior import DEFAULT_PRIOR_ALPHA, counts_digest

# Several phrasings, averaged, make the text embedding of a hashtag less sensitive to any one
# wording; the Instagram-style ones match how HARRISON's hashtags were used.
HASHTAG_TEMPLATES = (
    "a photo of {}.",
    "a photo tagged #{}.",
    "an instagram photo about {}.",
    "a picture showing {}.",
    "#{}",
)

# CLIP cosine similarities between a photo and a fitting text sit around 0.2-0.35. Centring
# the sigmoid near the low end keeps zero-shot scores spread out instead of all near 0 or 1.
# Only the ranking of a zero-shot head is meaningful; fine-tuning learns real biases.
ZERO_SHOT_COSINE_OFFSET = 0.2

# Bump when what is cached changes meaning (the head's formula, the export's layout).
CACHE_VERSION = 3  # 3: the popularity prior in the head's biases


def weights_identity(pretrained: str) -> str:
    """The tag, or the file and its version: a changed file is a different model."""
    if os.path.isfile(pretrained):
        stat = os.stat(pretrained)
        return f"file:{Path(pretrained).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"tag:{pretrained}"


def model_identity(model: str) -> str:
    """A config file's contents, or a built-in name with the open_clip release defining it."""
    if (model.endswith(".json") or os.path.sep in model) and os.path.isfile(model):
        return "config:" + hashlib.sha256(Path(model).read_bytes()).hexdigest()
    return f"open_clip:{metadata.version('open_clip_torch')}:{model}"


def zero_shot_key(model: str, pretrained: str, vocabulary: Sequence[str]) -> str:
    """A digest of everything the zero-shot model's values depend on."""
    material = json.dumps(
        {
            "version": CACHE_VERSION,
            "model": model_identity(model),
            "weights": weights_identity(pretrained),
            "vocabulary": list(vocabulary),
            "templates": HASHTAG_TEMPLATES,
            "offset": ZERO_SHOT_COSINE_OFFSET,
            "prior": {"alpha": DEFAULT_PRIOR_ALPHA, "counts": counts_digest()},
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def head_path(key: str, cache_dir: Path) -> Path:
    return cache_dir / "zero_shot_heads" / f"{key}.safetensors"


def export_dir(key: str, cache_dir: Path) -> Path:
    """config.json + model.onnx (+ its weights): what the ONNX backend serves on a CPU."""
    return cache_dir / "zero_shot_onnx" / key
