"""The image decoder against every format it accepts and every kind of file it must refuse."""

import numpy as np
import pytest
from PIL import Image

from inference.images import ImageLimits, ImageRejected, decode_image
from inference.spec import ModelSpec
from tests.corpus import encode, jpeg, photo, png_bomb

LIMITS = ImageLimits()
RED = (200, 30, 30)


def assert_colour(image: Image.Image, expected: tuple[int, int, int], tolerance: int = 6) -> None:
    centre = image.getpixel((image.width // 2, image.height // 2))
    assert image.mode == "RGB"
    assert all(abs(a - b) <= tolerance for a, b in zip(centre, expected, strict=True)), centre


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "HEIF", "AVIF"])
def test_every_accepted_format_decodes_to_rgb(format):
    data = encode(Image.new("RGB", (64, 48), RED), format)
    image = decode_image(data, LIMITS)
    assert image.size == (64, 48)
    assert_colour(image, RED)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 30), colour) for colour in (RED, (20, 20, 220))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert_colour(decode_image(data, LIMITS), RED)


def test_exif_orientation_is_applied():
    # Stored landscape, left half red, right half blue; orientation 6 means "rotate 90° clockwise
    # to display", which puts the stored left edge at the top.
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste(Image.new("RGB", (32, 32), (255, 0, 0)), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(encode(stored, "JPEG", exif=exif, quality=95), LIMITS)
    assert image.size == (32, 64)
    assert_colour(image.crop((0, 0, 32, 32)), (255, 0, 0), tolerance=20)
    assert_colour(image.crop((0, 32, 32, 64)), (0, 0, 255), tolerance=20)


def test_cmyk_jpeg_becomes_the_right_rgb():
    cmyk_red = Image.new("CMYK", (32, 32), (0, 255, 255, 0))
    assert_colour(decode_image(encode(cmyk_red, "JPEG", quality=95), LIMITS), (255, 0, 0), 12)


def test_transparent_areas_become_white_not_black():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert_colour(decode_image(encode(rgba, "PNG"), LIMITS), (255, 255, 255), 0)
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    assert_colour(decode_image(encode(palette, "PNG", transparency=0), LIMITS), (255, 255, 255), 0)
    grey_alpha = Image.new("LA", (32, 32), (10, 0))
    assert_colour(decode_image(encode(grey_alpha, "PNG"), LIMITS), (255, 255, 255), 0)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.full((20, 20), 40000, dtype=np.uint16)  # 61% grey
    image = decode_image(encode(Image.fromarray(values), "PNG"), LIMITS)
    assert_colour(image, (156, 156, 156), 1)


def test_grey_and_palette_images_become_rgb():
    assert_colour(decode_image(encode(Image.new("L", (20, 20), 90), "PNG"), LIMITS), (90, 90, 90))
    palette = Image.new("RGB", (20, 20), RED).convert("P", palette=Image.Palette.ADAPTIVE)
    assert_colour(decode_image(encode(palette, "PNG"), LIMITS), RED)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 10, "not an image"),
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        (png_bomb(100_000, 100_000), "too large"),
        (jpeg()[:300], "incomplete"),
    ],
    ids=["empty", "text", "pdf", "eps", "svg-xml", "svg", "bomb", "header-only"],
)
def test_hostile_files_are_refused_with_a_clear_message(data, says):
    with pytest.raises(ImageRejected, match=says):
        decode_image(data, LIMITS)


def test_pixel_limit_is_checked_before_decoding():
    data = encode(Image.new("RGB", (1000, 1000)), "PNG")
    with pytest.raises(ImageRejected, match="1000x1000"):
        decode_image(data, ImageLimits(max_pixels=999_999))


def test_byte_limit_names_both_sizes():
    with pytest.raises(ImageRejected, match=r"2\.0 MB; the limit is 1 MB"):
        decode_image(b"\xff" * (2 * 1024 * 1024), ImageLimits(max_bytes=1024 * 1024))


def test_truncated_photo_is_salvaged_when_most_of_it_arrived():
    data = jpeg(320, 240)
    image = decode_image(data[: int(len(data) * 0.6)], LIMITS)
    assert image.size == (320, 240)


def test_corrupt_image_data_is_refused():
    data = bytearray(encode(photo(64, 64), "PNG"))
    data[60:200] = b"\x00" * 140  # wreck the compressed stream, keep the header
    with pytest.raises(ImageRejected):
        decode_image(bytes(data), LIMITS)


def test_draft_mode_decodes_small_and_matches_the_full_decode(tiny_model):
    data = jpeg(1280, 960)
    draft = decode_image(data, LIMITS, min_side=224)
    full = decode_image(data, LIMITS)
    assert full.size == (1280, 960)
    assert draft.size == (320, 240)  # 1/4 scale keeps both sides >= 224
    spec = ModelSpec(**{**vars(tiny_model.spec), "preprocess": {**tiny_model.spec.preprocess}})
    spec.preprocess["size"] = (224, 224)
    transform = spec.eval_transform()  # what serving uses
    a, b = transform(draft).ravel(), transform(full).ravel()
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.999
