"""Images that tests generate: photo-like ones in every format, and hostile files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB picture (gradients plus blobs), different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy = rng.uniform(0.5, 4, 2)
        phase = rng.uniform(0, 6.3)
        wave = np.sin(x / width * fx * 6.3 + phase) * np.cos(y / height * fy * 6.3)
        channels.append(127 + 100 * wave + rng.normal(0, 6, size=wave.shape))
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=90)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims huge dimensions: a decompression bomb's shape."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )
