"""Turning untrusted bytes from a chat into an RGB picture, or a clear refusal.

In chat, bad input is the normal case: stickers, PDFs, half-uploaded files, screenshots in
16-bit PNG, phone photos with EXIF rotation, and now and then a decompression bomb. Every
refusal is an `ImageRejected` whose message can be shown to the person as it is.
"""

from __future__ import annotations

import collections
import io
import itertools
import math
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageFile, ImageStat, UnidentifiedImageError

from inference.memory import release_freed_memory

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
    in common use while capping one decoded RGBA image at about 256 MB. What many images at
    once may decode together is bounded separately, by the process's `PixelBudget`.
    """

    max_bytes: int = 20 * MEGABYTE
    max_pixels: int = 64_000_000


class ImageRejected(ValueError):
    """The file cannot be used; the message says why in words a chat user understands.

    `template` is the message with `{named}` placeholders, kept so the bot can say it in the
    person's language (its catalogues have every template raised here: `pybabel extract`
    reads them from these calls).
    """

    def __init__(self, template: str, **params: object):
        super().__init__(template.format(**params))
        self.template, self.params = template, params


class PixelBudget:
    """How many decoded pixels all threads together may hold in memory at once.

    `ImageLimits` bounds one image, but a bot decodes many at once (an album is ten files, the
    engine decodes on several threads, and several people send at the same time): ten 64 MP
    images decoded together would need 2.5 GB. Each decode holds its pixel count, read from the
    file's header before any pixel is decoded, until its full-size pixels are freed; the
    others wait their turn, first come first served so a large image is not starved by small
    ones. An image larger than the whole budget (allowed by a caller's own, larger limits)
    waits until it can decode alone. A pixel costs at most 4 bytes decoded, in every mode.
    """

    def __init__(self, pixels: int):
        self.capacity = pixels
        self.in_use = 0
        self.peak = 0  # the most ever held at once, for tests and benchmarks
        self._changed = threading.Condition()
        self._waiting: collections.deque[int] = collections.deque()
        self._tickets = itertools.count()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until `pixels` fit in the budget, and hold them for the `with` block."""
        weight = min(pixels, self.capacity)
        with self._changed:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            self._changed.wait_for(
                lambda: self._waiting[0] == ticket and self.in_use + weight <= self.capacity
            )
            self._waiting.popleft()
            self.in_use += weight
            self.peak = max(self.peak, self.in_use)
            self._changed.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= weight
                self._changed.notify_all()


# One budget for the whole process, the size of one largest image: 64 MP x 4 bytes = 256 MB of
# decoded pixels at most, however many images arrive at once. Ordinary photos hold little of
# it (a JPEG decodes at 1/2 to 1/8 scale, see decode_image), so they rarely wait.
DECODE_BUDGET = PixelBudget(ImageLimits().max_pixels)

# After a decode this large, freed memory is handed back to the system: glibc would otherwise
# keep it (an album of ten hostile PNGs left the bot 2 GB larger than before it arrived).
RELEASE_AFTER_PIXELS = 16_000_000

# What decoding one pixel costs, in units of 4 bytes, where a format's decoder keeps full-size
# buffers of its own next to Pillow's image: libwebp's animation canvases and a bytes copy of
# the frame; libavif's and libheif's decoded frame. Measured with Pillow 13 and pillow-heif 1.8
# (tests/test_hostile_images.py checks them); every other format costs at most 1. A file is
# refused when its cost exceeds ImageLimits.max_pixels, so no single decode needs more than
# the 256 MB that limit stands for: a flat 64 MP WebP is 2.5 KB and took 960 MB.
DECODE_COST = {"WEBP": 4, "AVIF": 3, "HEIF": 2}

# Before the model's own resize, images are reduced by an integer factor (a box filter, fast
# and cheap) as long as their short side stays at least REDUCING_GAP times the model's input
# side: Pillow documents that resampling from 3x the target is indistinguishable from
# resampling the full image. Whatever its shape, the reduced copy keeps at most
# MAX_REDUCED_PIXELS (16 MB in RGB), so a 64000x1000 strip does not make a second full copy.
REDUCING_GAP = 3
MAX_REDUCED_PIXELS = 4_000_000
# Conversions (transparency, 16-bit, palettes) run on strips of about this many pixels, so
# they need a few MB of working memory instead of several full-size copies.
STRIP_PIXELS = 1 << 18


def check_file_size(size: int, limits: ImageLimits) -> None:
    """Refuse empty and oversized files before anyone downloads or reads them."""
    if size == 0:
        raise ImageRejected("The file is empty.")
    if size > limits.max_bytes:
        raise ImageRejected(
            "The file is {size} MB; the limit is {limit} MB. Send a smaller or compressed photo.",
            size=f"{size / MEGABYTE:.1f}",
            limit=f"{limits.max_bytes / MEGABYTE:.0f}",
        )


def decode_image(
    data: bytes,
    limits: ImageLimits,
    min_side: int | None = None,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Decode `data` to an upright RGB image.

    `min_side` is the model's input side: the image may come back smaller than the file, but
    never with its short side under REDUCING_GAP x min_side (or the file's own size, if it is
    smaller). JPEG decoding also runs in draft mode: the decoder scales by 1/2, 1/4 or 1/8
    while decoding, as long as both sides stay >= min_side. For a model that sees 224 px this
    is about 3x faster than a full decode, with the same result after resizing. Without
    `min_side` the image keeps its full size.

    Decoding holds its pixels in `budget` (the process's DECODE_BUDGET unless given).
    """
    check_file_size(len(data), limits)
    if _looks_like_svg(data):
        raise ImageRejected(
            "SVG drawings are not supported; send a photo ({formats}).", formats=FORMATS_FOR_PEOPLE
        )
    budget = budget or DECODE_BUDGET
    try:
        return _decode(data, limits, min_side, budget)
    except ImageRejected:
        raise
    except _TRUNCATED_ERRORS as error:
        if not _is_truncation(error):
            raise ImageRejected("The image is damaged and cannot be decoded.") from None
        return _decode_truncated(data, limits, min_side, budget)


_TRUNCATED_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)


def _decode(
    data: bytes, limits: ImageLimits, min_side: int | None, budget: PixelBudget
) -> Image.Image:
    """Header, budget, pixels, reduction, conversion: the full-size pixels live only inside
    the budget's hold, and no other full-size copy is made (unless no reduction is asked)."""
    image = _open(data, limits, min_side)
    pixels = image.width * image.height
    decoded = pixels * _decode_cost(image)  # the image, with its decoder's own buffers
    factor = _reduction_factor(image.size, min_side)
    with budget.hold(decoded + pixels // factor**2):  # and the reduced copy
        try:
            image.load()  # animated GIF/WebP and multi-page TIFF open at their first frame
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            reduced = _reduce_to_rgb(image, factor)
        finally:
            image.close()  # frees the full-size pixels before the budget is released
            del image
            if decoded >= RELEASE_AFTER_PIXELS:  # before the next decode may allocate
                release_freed_memory()
    # Rotation is applied to the reduced pixels, so it stays cheap.
    return _upright(reduced, orientation)


def _open(data: bytes, limits: ImageLimits, min_side: int | None) -> Image.Image:
    """The image with its header read and nothing decoded yet, or a refusal."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels(limits) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            "This file is not an image I can read; send a photo ({formats}).",
            formats=FORMATS_FOR_PEOPLE,
        ) from None
    width, height = image.size
    if width * height * _decode_cost(image) > limits.max_pixels:
        raise _too_many_pixels(limits, width, height, image.format)
    if min_side:
        # Only JPEG implements draft(); for other formats this is a no-op.
        image.draft("RGB", (min_side, min_side))
    return image


def _decode_cost(image: Image.Image) -> int:
    return DECODE_COST.get(image.format or "", 1)


def _too_many_pixels(
    limits: ImageLimits, width: int = 0, height: int = 0, format: str | None = None
) -> ImageRejected:
    megapixels = f"{limits.max_pixels / DECODE_COST.get(format or '', 1) / 1e6:.0f}"
    if width and DECODE_COST.get(format or "", 1) > 1:
        return ImageRejected(
            "The image is too large ({width}x{height}); the limit for {format} images is "
            "{megapixels} megapixels. Send a smaller version.",
            width=width,
            height=height,
            format=format,
            megapixels=megapixels,
        )
    if width:
        return ImageRejected(
            "The image is too large ({width}x{height}); the limit is {megapixels} megapixels. "
            "Send a smaller version.",
            width=width,
            height=height,
            megapixels=megapixels,
        )
    return ImageRejected(
        "The image is too large; the limit is {megapixels} megapixels. Send a smaller version.",
        megapixels=megapixels,
    )


def _reduction_factor(size: tuple[int, int], min_side: int | None) -> int:
    """The integer factor to reduce an image of `size` by, for a model that sees `min_side`."""
    if not min_side:
        return 1
    width, height = size
    keeps_detail = min(width, height) // (REDUCING_GAP * min_side)
    bounded = math.ceil(math.sqrt(width * height / MAX_REDUCED_PIXELS))
    return max(1, keeps_detail, bounded)


def _is_truncation(error: BaseException) -> bool:
    return isinstance(error, OSError) and "truncated" in str(error).lower()


# Pillow only offers a process-wide switch for decoding truncated files; the lock keeps our
# retry from racing another thread that also toggles it.
_truncated_lock = threading.Lock()


def _decode_truncated(
    data: bytes, limits: ImageLimits, min_side: int | None, budget: PixelBudget
) -> Image.Image:
    """Salvage a file that was cut short (an interrupted upload) if enough of it survives."""
    with _truncated_lock:
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            image = _decode(data, limits, min_side, budget)
        except _TRUNCATED_ERRORS:
            image = None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
    # A file cut right after its header "decodes" to one flat colour: nothing to recognise.
    if image is None or ImageStat.Stat(image.convert("L")).stddev[0] < 1.0:
        raise ImageRejected(
            "The image is incomplete (the upload was probably interrupted); send it again."
        )
    return image


def _reduce_to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """`image` reduced `factor` times and converted to RGB, one strip of rows at a time.

    Each strip is converted first (transparency composited over white, 16-bit scaled) and
    reduced after, so the result is the same as converting the whole image, then reducing it;
    but the working memory is a few strips, not several full-size copies. Strips are a whole
    number of `factor` rows high, so no block of the reduction straddles two strips.
    """
    width, height = image.size
    value_range = image.getextrema() if image.mode == "F" else None  # of the whole image
    rows = factor * max(1, STRIP_PIXELS // (width * factor))
    if rows >= height and factor == 1:
        return _to_rgb(image, value_range)
    reduced = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = _to_rgb(image.crop((0, top, width, min(height, top + rows))), value_range)
        reduced.paste(strip.reduce(factor), (0, top // factor))
    return reduced


_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _to_rgb(image: Image.Image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """Convert every mode Pillow produces to 8-bit RGB as a viewer would show it.

    `value_range` is the (min, max) that a floating-point image is stretched from.
    """
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = _high_bit_depth_to_grey(image, value_range)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # Transparent areas are shown over white by chat apps; black would invent dark pixels.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK, YCbCr, LAB, palette, 1-bit and grey all have correct conversions in Pillow.
    return image.convert("RGB")


def _high_bit_depth_to_grey(
    image: Image.Image, value_range: tuple[float, float] | None
) -> Image.Image:
    """Pillow's own conversion clips 16-bit values at 255, turning most of the picture white."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        low, high = value_range or (float(values.min()), float(values.max()))
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    else:
        scaled = values / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L")


_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation as ImageOps.exif_transpose does, without its full-size copy
    of an image that needs no turning."""
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    return image.transpose(method) if method is not None else image
