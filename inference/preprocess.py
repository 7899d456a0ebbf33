"""open_clip's inference preprocessing in Pillow and numpy, so serving needs no torch.

The ONNX backend serves without importing torch or torchvision (together about 700 MB of
resident memory before any model). This module reproduces open_clip's eval transform
(`image_transform_v2(cfg, is_train=False)`) step for step: the same Pillow resize, the same
crop arithmetic and float32 normalisation, so both backends see identical pixels (a test
compares them with open_clip's own transform). Training keeps open_clip's transform, with its
augmentation (`ModelSpec.image_transform(training=True)`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

# open_clip.constants.OPENAI_DATASET_MEAN / _STD, its defaults when a config names none.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

Transform = Callable[[Image.Image], np.ndarray]


def eval_transform(preprocess: Mapping[str, Any]) -> Transform:
    """RGB image -> float32 (3, H, W) array, from a checkpoint's `preprocess` settings."""
    size = preprocess.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    mode = preprocess.get("resize_mode") or "shortest"
    bicubic = preprocess.get("interpolation", "bicubic") != "bilinear"
    resample = Image.Resampling.BICUBIC if bicubic else Image.Resampling.BILINEAR
    fill = int(preprocess.get("fill_color", 0))
    mean = np.asarray(preprocess.get("mean") or OPENAI_MEAN, np.float32).reshape(3, 1, 1)
    std = np.asarray(preprocess.get("std") or OPENAI_STD, np.float32).reshape(3, 1, 1)
    if mode not in ("shortest", "longest", "squash"):
        raise ValueError(f"unknown resize_mode {mode!r} in the model's preprocessing settings")

    def transform(image: Image.Image) -> np.ndarray:
        if mode == "squash":
            image = image.resize((width, height), resample)
        elif mode == "longest":
            image = _resize_keep_ratio(image, height, width, longest=True, resample=resample)
            image = _center_crop_or_pad(image, height, width, fill)
        else:
            if height == width:
                image = _resize_shortest_side(image, height, resample)
            else:  # open_clip always uses bicubic here
                image = _resize_keep_ratio(
                    image, height, width, longest=False, resample=Image.Resampling.BICUBIC
                )
            image = _center_crop_or_pad(image, height, width, fill=0)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
        return (pixels / np.float32(255) - mean) / std

    return transform


def _resize_shortest_side(image: Image.Image, side: int, resample: int) -> Image.Image:
    """torchvision's Resize(int): the short side becomes `side`, the long one is truncated."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(side * long / short)
    size = (side, new_long) if width <= height else (new_long, side)
    return image.resize(size, resample)


def _resize_keep_ratio(
    image: Image.Image, height: int, width: int, *, longest: bool, resample: int
) -> Image.Image:
    """open_clip's ResizeKeepRatio (without its training-time randomness)."""
    ratio_h, ratio_w = image.height / height, image.width / width
    ratio = max(ratio_h, ratio_w) if longest else min(ratio_h, ratio_w)
    return image.resize((round(image.width / ratio), round(image.height / ratio)), resample)


def _center_crop_or_pad(image: Image.Image, height: int, width: int, fill: int) -> Image.Image:
    """torchvision's center crop, padding first (with `fill`) when the image is smaller."""
    if width > image.width or height > image.height:
        padded = Image.new(image.mode, (max(width, image.width), max(height, image.height)))
        padded.paste((fill,) * len(image.getbands()), (0, 0, *padded.size))
        padded.paste(
            image, (max(0, (width - image.width) // 2), max(0, (height - image.height) // 2))
        )
        image = padded
    top = round((image.height - height) / 2)
    left = round((image.width - width) / 2)
    return image.crop((left, top, left + width, top + height))
