"""Hostile images cannot take the process past its documented memory.

The attack: a 7990x7990 PNG with transparency is under the 64-megapixel limit but compresses to
a few hundred KB, so anyone can send ten at once. These tests measure the peak resident memory
of the real entry points (`python -m inference`, `python -m bot`) while they decode them.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.images import (
    DECODE_COST,
    ImageLimits,
    ImageRejected,
    PixelBudget,
    _reduce_to_rgb,
    _to_rgb,
    decode_image,
)
from inference.preprocess import eval_transform
from tests.bot_process import start_bot
from tests.corpus import encode, jpeg, photo
from tests.fake_telegram import TOKEN, FakeBotAPI

MB = 1024 * 1024
HOSTILE_SIDE = 7990  # 63.8 megapixels: just under ImageLimits.max_pixels
# The README's bound: the resting process, plus the decode budget (64 megapixels at 4 bytes
# each, 256 MB), plus working memory for the strips being converted and the reduced copies.
DECODE_BUDGET_BYTES = 64_000_000 * 4
WORKING_MEMORY = 64 * MB


def sticker(side: int) -> Image.Image:
    """A mostly transparent RGBA picture: flat areas, so it compresses to almost nothing."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((side // 8, side // 8, side * 7 // 8, side * 7 // 8), fill=(220, 40, 40, 255))
    draw.rectangle(
        (side * 3 // 8, side // 16, side * 5 // 8, side * 15 // 16), fill=(30, 30, 200, 128)
    )
    return image


def hostile_png(path: Path) -> Path:
    """A 7990x7990 RGBA PNG: about 300 KB on disk, 255 MB decoded."""
    sticker(HOSTILE_SIDE).save(path, compress_level=9)
    assert path.stat().st_size < 1 * MB
    return path


@pytest.fixture(scope="module")
def hostile_file(tmp_path_factory) -> Path:
    return hostile_png(tmp_path_factory.mktemp("hostile") / "hostile.png")


@pytest.fixture(scope="module")
def warm_model_cache(tiny_clip_files, tmp_path_factory):
    """Run `python -m inference` once, so the measured runs find the model's ONNX export in
    the cache: exporting (a first start, with torch) has a peak of its own, not measured here."""
    photo = tmp_path_factory.mktemp("warm") / "photo.jpg"
    photo.write_bytes(jpeg())
    result = subprocess.run(
        [sys.executable, "-m", "inference", *model_args(tiny_clip_files), str(photo)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr


def model_args(tiny_clip_files) -> list[str]:
    config_path, weights_path = tiny_clip_files
    return ["--model", config_path, "--pretrained", weights_path, "--device", "cpu"]


# Linux counts a child's peak from before its exec too, so a child forked from this test
# process (which holds the hostile image and torch) would report this process's size. A small
# launcher forks the measured command from itself and reports that child's peak instead.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, file=sys.stderr)
"""


def peak_rss_of(argv: list[str]) -> tuple[int, str]:
    """(peak resident bytes, stdout) of a command run to its end."""
    result = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv], capture_output=True, text=True, timeout=600
    )
    status, peak_kb = map(int, result.stderr.split())
    assert status == 0, result.stdout
    return peak_kb * 1024, result.stdout  # Linux reports kilobytes


def test_python_dash_m_inference_decodes_the_hostile_png_under_600_mb(
    tiny_clip_files, warm_model_cache, hostile_file
):
    peak, stdout = peak_rss_of(
        [sys.executable, "-m", "inference", *model_args(tiny_clip_files), str(hostile_file)]
    )
    assert stdout.startswith(f"{hostile_file}: #")
    print(f"python -m inference on the hostile PNG: peak {peak / MB:.0f} MB")
    assert peak < 600 * MB


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


async def test_the_bot_receiving_ten_hostile_files_at_once_stays_within_its_bound(
    tiny_clip_files, warm_model_cache, hostile_file, tmp_path
):
    telegram = FakeBotAPI()
    await telegram.start()
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram.url}
    bot = await start_bot(tiny_clip_files, tmp_path / "bot.sqlite3", env)
    try:
        await telegram.wait_for("getUpdates", timeout=120)
        # Warm up on one ordinary photo, so the first batch's own allocations are in the
        # resting size; then measure the peak from here on ("5" resets VmHWM).
        await telegram.send_message(telegram.message(1, photo=telegram.add_photo(jpeg())))
        await telegram.wait_for("sendMessage")
        Path(f"/proc/{bot.pid}/clear_refs").write_text("5")
        resting = memory_of(bot.pid)["VmRSS"]
        data = hostile_file.read_bytes()
        for _ in range(10):  # one album: its ten files reach the engine together
            document = telegram.add_document(data, "image/png")
            message = telegram.message(2, document=document, media_group_id="hostile")
            await telegram.send_message(message)
        replies = await telegram.wait_for("sendMessage", 2, timeout=300)
        after = memory_of(bot.pid)
    finally:
        bot.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(bot.communicate(), 60)
        await telegram.stop()
    assert bot.returncode == 0, output.decode()
    assert replies[-1]["text"].startswith("#"), replies[-1]["text"]
    print(
        f"bot: resting {resting / MB:.0f} MB, peak {after['VmHWM'] / MB:.0f} MB, "
        f"after the album {after['VmRSS'] / MB:.0f} MB"
    )
    assert after["VmHWM"] < resting + DECODE_BUDGET_BYTES + WORKING_MEMORY
    assert after["VmHWM"] < 600 * MB
    assert after["VmRSS"] < resting + WORKING_MEMORY  # what was decoded went back to the system


# --- the budget ------------------------------------------------------------------------------


def test_the_budget_holds_at_most_its_capacity_and_serves_in_order():
    budget = PixelBudget(100)
    held, order, lock = [0], [], threading.Lock()

    def decode(name: str, pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                held[0] += pixels
                order.append(name)
                assert budget.in_use <= budget.capacity
            time.sleep(0.02)
            with lock:
                held[0] -= pixels

    work = [("big", 90), *((f"small{i}", 30) for i in range(6)), ("huge", 1000), ("last", 10)]
    with ThreadPoolExecutor(len(work)) as pool:
        for name, pixels in work:
            pool.submit(decode, name, pixels)
            time.sleep(0.002)  # submitted in this order
    assert budget.peak <= 100 and budget.in_use == 0
    assert order.index("huge") < order.index("last")  # larger than the budget: alone, in turn
    assert order[0] == "big"


def test_concurrent_decodes_hold_their_pixels_within_the_budget():
    data = encode(sticker(3000), "PNG")  # 9 MP each
    budget = PixelBudget(10_000_000)  # room for one at a time
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda _: decode_image(data, LIMITS, 224, budget).size, range(6)))
    assert sizes == [(750, 750)] * 6  # reduced by 4: the short side stays >= 3 x 224
    assert 9_000_000 <= budget.peak <= 10_000_000


# --- reducing first, converting in strips ----------------------------------------------------

LIMITS = ImageLimits()


@functools.cache
def large_photo(width: int, height: int) -> Image.Image:
    """photo(), kept: a few megapixels of it take a second or two to make."""
    return photo(width, height, seed=3)


def photo_with_alpha(width: int, height: int) -> Image.Image:
    rgba = np.asarray(large_photo(width, height).convert("RGBA")).copy()
    rgba[:, : width // 3, 3] = 0
    rgba[height // 3 :, :, 3] = 128
    return Image.fromarray(rgba)


def in_mode(mode: str, width: int, height: int) -> Image.Image:
    if mode == "RGBA":
        return photo_with_alpha(width, height)
    if mode == "P":  # 63 colours, and a transparent left third
        quantized = large_photo(width, height).quantize(63, method=Image.Quantize.FASTOCTREE)
        indices = np.asarray(quantized).copy()
        indices[:, : width // 3] = 63
        image = Image.fromarray(indices, "P")
        image.putpalette(quantized.getpalette())
        image.info["transparency"] = 63
        return image
    if mode in ("I;16", "F"):
        grey = np.asarray(large_photo(width, height).convert("L"), np.float32) * 200 + 3000
        return Image.fromarray(grey.astype(np.uint16 if mode == "I;16" else np.float32))
    return large_photo(width, height).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "I;16", "F", "CMYK", "1"])
@pytest.mark.parametrize("factor", [1, 3])
def test_converting_in_strips_gives_the_same_pixels_as_converting_at_once(mode, factor):
    image = in_mode(mode, 701, 1203)  # many strips, and a last strip of leftover rows
    expected = _to_rgb(image, image.getextrema() if mode == "F" else None)
    if factor > 1:
        expected = expected.reduce(factor)
    got = _reduce_to_rgb(image, factor)
    assert got.mode == "RGB" and got.size == expected.size
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("size", [(2016, 2688), (7000, 800)], ids=["photo", "panorama"])
def test_the_model_sees_near_identical_pixels_from_a_reduced_decode(mode, size):
    """Reducing first changes what the model sees by well under one 8-bit level on average:
    no more than JPEG's draft mode does (the panorama is reduced further, to bound memory)."""
    data = encode(in_mode(mode, *size), "PNG", compress_level=1)
    limits = ImageLimits(max_bytes=100 * MB)  # uncompressed noise makes large files
    reduced = decode_image(data, limits, min_side=224)
    full = decode_image(data, limits)  # what the model saw before reducing first
    assert reduced.width < full.width and min(reduced.size) >= 224
    transform = eval_transform({"size": 224})
    a, b = transform(reduced), transform(full)
    one_level = 1 / 255 / 0.26  # in normalised units
    assert np.abs(a - b).mean() < one_level / 2
    assert np.abs(a - b).max() < 10 * one_level
    assert a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9995


def test_exif_rotation_is_applied_to_the_reduced_image():
    stored = Image.new("RGB", (4032, 2016), (0, 0, 255))
    stored.paste(Image.new("RGB", (2016, 2016), (255, 0, 0)), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise: the stored left half goes on top
    image = decode_image(encode(stored, "PNG", exif=exif), LIMITS, min_side=224)
    assert image.size == (672, 1344)
    assert image.getpixel((336, 300)) == (255, 0, 0)
    assert image.getpixel((336, 1000)) == (0, 0, 255)


# --- what each format costs to decode --------------------------------------------------------

_MEASURE_ONE_DECODE = """
import sys
from pathlib import Path
from inference.images import ImageLimits, decode_image
data = Path(sys.argv[1]).read_bytes()
def status(name):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                if line.startswith(name))
Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from here
before = status("VmRSS")
decode_image(data, ImageLimits(), 224)
print(status("VmHWM") - before)
"""


@pytest.mark.parametrize(
    ("format", "options"),
    [
        ("PNG", {}),
        ("TIFF", {"compression": "tiff_deflate"}),
        ("WEBP", {"lossless": True}),
        ("AVIF", {"quality": 30}),
        ("HEIF", {"quality": 30}),
    ],
)
def test_decoding_costs_no_more_than_the_budget_counts(format, options, tmp_path):
    """DECODE_COST is what the budget and the pixel limit count; a decoder that keeps more
    full-size buffers than it says would break the documented bound."""
    side = 4000
    path = tmp_path / f"sticker.{format.lower()}"
    path.write_bytes(encode(sticker(side), format, **options))
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE_ONE_DECODE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout)
    cost = DECODE_COST.get(format, 1)
    print(f"{format}: {peak / MB:.0f} MB for {side * side / 1e6:.0f} MP (cost {cost})")
    assert peak <= cost * side * side * 4 + 32 * MB


def test_a_webp_over_its_own_pixel_limit_is_refused():
    data = encode(Image.new("RGB", (4100, 4000), (9, 9, 9)), "WEBP", lossless=True)
    assert len(data) < 100_000  # a 16 MP bomb in a few KB
    with pytest.raises(ImageRejected, match="limit for WEBP images is 16 megapixels"):
        decode_image(data, LIMITS)
