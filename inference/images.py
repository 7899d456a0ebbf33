"""Turning untrusted bytes from a chat into an RGB picture, or a clear refusal.

In chat, bad input is the normal case: stickers, PDFs, half-uploaded files, screenshots in
16-bit PNG, phone photos with EXIF rotation, and now and then a decompression bomb. Every
refusal is an `ImageRejected` whose message can be shown to the person as it is.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()

# We enforce our own pixel limit before decoding (see decode_image); Pillow's warning for
# images between its limit and twice its limit would only be noise next to it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Formats Pillow may open for us. Everything else (EPS, which runs Ghostscript; PSD; ICO...)
# is refused before any of its decoder code runs. The JPEG opener also returns MPO, the
# multi-picture JPEG many phones write.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
FORMATS_FOR_PEOPLE = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or AVIF"

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """Bounds that keep one hostile file from exhausting memory.

    20 MB matches the Telegram Bot API download limit. 64 megapixels admits every phone photo
    in common use while capping one decoded RGBA image at about 256 MB.
    """

    max_bytes: int = 20 * MEGABYTE
    max_pixels: int = 64_000_000


class ImageRejected(ValueError):
    """The file cannot be used; the message says why in words a chat user understands."""


def check_file_size(size: int, limits: ImageLimits) -> None:
    """Refuse empty and oversized files before anyone downloads or reads them."""
    if size == 0:
        raise ImageRejected("The file is empty.")
    if size > limits.max_bytes:
        raise ImageRejected(
            f"The file is {size / MEGABYTE:.1f} MB; the limit is "
            f"{limits.max_bytes / MEGABYTE:.0f} MB. Send a smaller or compressed photo."
        )


def decode_image(data: bytes, limits: ImageLimits, min_side: int | None = None) -> Image.Image:
    """Decode `data` to an upright RGB image.

    `min_side` lets JPEG decoding run in draft mode: the decoder scales by 1/2, 1/4 or 1/8
    while decoding, as long as both sides stay >= min_side. For a model that sees 224 px this
    is about 3x faster than a full decode, with the same result after resizing.
    """
    check_file_size(len(data), limits)
    if _looks_like_svg(data):
        raise ImageRejected(f"SVG drawings are not supported; send a photo ({FORMATS_FOR_PEOPLE}).")
    try:
        image = _open(data, limits, min_side)
    except ImageRejected:
        raise
    except _TRUNCATED_ERRORS as error:
        if not _is_truncation(error):
            raise ImageRejected("The image is damaged and cannot be decoded.") from None
        image = _open_truncated(data, limits, min_side)
    return _to_rgb(image)


_TRUNCATED_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)


def _open(data: bytes, limits: ImageLimits, min_side: int | None) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageRejected(_too_many_pixels_message(limits)) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            f"This file is not an image I can read; send a photo ({FORMATS_FOR_PEOPLE})."
        ) from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageRejected(_too_many_pixels_message(limits, width, height))
    if min_side:
        # Only JPEG implements draft(); for other formats this is a no-op.
        image.draft("RGB", (min_side, min_side))
    image.load()  # animated GIF/WebP and multi-page TIFF open at their first frame
    # Rotation is applied to the (possibly draft-reduced) pixels, so it stays cheap.
    return ImageOps.exif_transpose(image)


def _too_many_pixels_message(limits: ImageLimits, width: int = 0, height: int = 0) -> str:
    size = f" ({width}x{height})" if width else ""
    return (
        f"The image is too large{size}; the limit is {limits.max_pixels / 1e6:.0f} megapixels. "
        "Send a smaller version."
    )


def _is_truncation(error: BaseException) -> bool:
    return isinstance(error, OSError) and "truncated" in str(error).lower()


# Pillow only offers a process-wide switch for decoding truncated files; the lock keeps our
# retry from racing another thread that also toggles it.
_truncated_lock = threading.Lock()


def _open_truncated(data: bytes, limits: ImageLimits, min_side: int | None) -> Image.Image:
    """Salvage a file that was cut short (an interrupted upload) if enough of it survives."""
    with _truncated_lock:
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            image = _open(data, limits, min_side)
        except _TRUNCATED_ERRORS:
            image = None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
    # A file cut right after its header "decodes" to one flat colour: nothing to recognise.
    if image is None or float(np.asarray(image.convert("L")).std()) < 1.0:
        raise ImageRejected(
            "The image is incomplete (the upload was probably interrupted); send it again."
        )
    return image


_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert every mode Pillow produces to 8-bit RGB as a viewer would show it."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = _high_bit_depth_to_grey(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # Transparent areas are shown over white by chat apps; black would invent dark pixels.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK, YCbCr, LAB, palette, 1-bit and grey all have correct conversions in Pillow.
    return image.convert("RGB")


def _high_bit_depth_to_grey(image: Image.Image) -> Image.Image:
    """Pillow's own conversion clips 16-bit values at 255, turning most of the picture white."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    else:
        scaled = values / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L")
