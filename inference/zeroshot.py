"""A hashtag head built from CLIP text embeddings, cached on disk.

Encoding 997 hashtags x several prompts through the text tower takes tens of seconds on a CPU;
the result depends only on the model, its weights and the vocabulary, so it is computed once and
kept under the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

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

HEAD_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$HASHTAG_CACHE_DIR, else the XDG cache folder (the Docker image points it at /data)."""
    if configured := os.environ.get("HASHTAG_CACHE_DIR"):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hashtag-bot"


def head_cache_key(
    model_cfg: dict[str, Any], weights_identity: str, vocabulary: Sequence[str]
) -> str:
    """A digest of everything the head's values depend on."""
    material = json.dumps(
        {
            "version": HEAD_CACHE_VERSION,
            "model_cfg": model_cfg,
            "weights": weights_identity,
            "vocabulary": list(vocabulary),
            "templates": HASHTAG_TEMPLATES,
            "offset": ZERO_SHOT_COSINE_OFFSET,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def build_zero_shot_head(clip_model: nn.Module, tokenizer, vocabulary: Sequence[str]) -> nn.Linear:
    """Head rows = the averaged, normalised text embeddings of each hashtag's prompts."""
    with torch.inference_mode():
        # open_clip's helper averages the normalised template embeddings and renormalises.
        text_embeddings = open_clip.build_zero_shot_classifier(
            clip_model,
            tokenizer=tokenizer,
            classnames=list(vocabulary),
            templates=HASHTAG_TEMPLATES,
            num_classes_per_batch=64,
            device=next(clip_model.parameters()).device,
            use_tqdm=True,
        ).T.float()  # (vocabulary, embed_dim)
        scale = float(clip_model.logit_scale.exp().clamp(max=100))
    head = nn.Linear(text_embeddings.shape[1], text_embeddings.shape[0])
    with torch.no_grad():
        head.weight.copy_(text_embeddings * scale)
        head.bias.fill_(-scale * ZERO_SHOT_COSINE_OFFSET)
    return head


def load_or_build_zero_shot_head(
    clip_model: nn.Module,
    tokenizer,
    vocabulary: Sequence[str],
    cache_key: str,
    cache_dir: Path,
) -> nn.Linear:
    path = cache_dir / "zero_shot_heads" / f"{cache_key}.safetensors"
    if path.is_file():
        try:
            tensors = load_file(path)
            head = nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0])
            head.load_state_dict(tensors)
            log.info("loaded the zero-shot head from %s", path)
            return head
        except Exception as error:  # a damaged cache file is rebuilt, never fatal
            log.warning("ignoring unreadable head cache %s (%s); rebuilding it", path, error)
    log.info("building the zero-shot head for %d hashtags (cached afterwards)", len(vocabulary))
    head = build_zero_shot_head(clip_model, tokenizer, vocabulary)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, partial)
        partial.replace(path)  # atomic: a crash never leaves a half-written cache entry
    except OSError as error:
        log.warning("could not cache the zero-shot head in %s (%s)", path.parent, error)
    return head
