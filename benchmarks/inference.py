"""Inference throughput, decode cost, memory and start-up time for the ViT-B-32 architecture.

    python benchmarks/inference.py [--device auto|cpu|cuda] [--images 128]

Random weights (the compute is the same as with the real ones) are saved to a temporary
.safetensors file and loaded through the same `--model/--pretrained` path users take. Every
figure comes from this one run, so ratios compare like with like. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.cli import build_parser, format_result, predict_files
from inference.device import resolve_device
from inference.engine import InferenceEngine
from inference.images import ImageLimits, decode_image
from inference.options import load_model_from_args
from tests.corpus import jpeg
from tests.fake_telegram import TOKEN, FakeBotAPI

ARCHITECTURE = "ViT-B-32"


def save_random_weights(folder: Path) -> str:
    path = folder / "vit-b-32-random.safetensors"
    torch.manual_seed(0)  # the same weights every run: the cosine figures are reproducible
    model = open_clip.create_model(ARCHITECTURE)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return str(path)


def bare_forward_images_per_second(
    engine: InferenceEngine, batch: int, seconds: float = 6
) -> float:
    """The model alone: pre-made tensors in, scores out."""
    pixels = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), np.float32)
    engine.forward_batch(pixels)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3 * batch:
        engine.forward_batch(pixels)
        done += batch
    return done / (time.perf_counter() - start)


def backend_comparison(folder: Path, photos: list[bytes], seconds: float = 6) -> dict:
    """torch fp32 vs ONNX Runtime fp32 and int8: images/s at batch 1 and 32, and cosine of
    each ONNX embedding to torch's on the same decoded photos."""
    from benchmarks.finetune import random_vit_b_32
    from finetune.export import export_checkpoint
    from inference.backends.onnx_runtime import load_onnx
    from inference.loading import save_checkpoint

    checkpoint = folder / "vit-b-32-checkpoint"
    torch_model = random_vit_b_32(torch.device("cpu")).eval()
    save_checkpoint(torch_model, checkpoint)
    export_checkpoint(checkpoint)
    transform = torch_model.spec.eval_transform()
    pixels = np.stack([transform(decode_image(p, ImageLimits(), 224)) for p in photos[:32]])
    reference = torch_model.predict_batch(pixels)[1].astype(np.float32)
    results = {}
    for name, model in (
        ("torch_fp32", torch_model),
        ("onnx_fp32", load_onnx(checkpoint)),
        ("onnx_int8", load_onnx(checkpoint, int8=True)),
    ):
        rates = {}
        for batch in (1, 32):
            model.predict_batch(pixels[:batch])  # warm-up
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                model.predict_batch(pixels[:batch])
                done += batch
            rates[batch] = done / (time.perf_counter() - start)
        embedding = model.predict_batch(pixels)[1].astype(np.float32)
        cosine = min(cosine_similarity(a, b) for a, b in zip(embedding, reference, strict=True))
        results[name] = {"batch_1": rates[1], "batch_32": rates[32], "min_cosine": cosine}
    return results


def decode_ms(engine: InferenceEngine, photos: list[bytes], draft: bool) -> float:
    """Bytes -> 224 px model tensor, per image."""
    transform, limits = engine.model.spec.eval_transform(), ImageLimits()
    min_side = engine.model.spec.input_side if draft else None
    start = time.perf_counter()
    for data in photos:
        transform(decode_image(data, limits, min_side=min_side))
    return (time.perf_counter() - start) / len(photos) * 1000


def draft_cosine(engine: InferenceEngine, photos: list[bytes]) -> float:
    transform, limits = engine.model.spec.eval_transform(), ImageLimits()
    values = []
    for data in photos:
        a = transform(decode_image(data, limits, min_side=224)).ravel()
        b = transform(decode_image(data, limits)).ravel()
        values.append(cosine_similarity(a, b))
    return min(values)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def cli_images_per_second(engine: InferenceEngine, paths: list[Path]) -> float:
    """What `python -m inference --json` does after loading: read, decode, batch, format."""
    start = time.perf_counter()
    async with engine:
        async for path, outcome in predict_files(engine, paths):
            format_result(path, outcome, 10, as_json=True)
    return len(paths) / (time.perf_counter() - start)


PEAK_RSS_PROBE = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[2:], check=True, input=open(sys.argv[1], 'rb').read(), "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_rss_mb(argv: list[str], env: dict[str, str], stdin: Path = Path(os.devnull)) -> float:
    """Peak resident memory of one command, measured by a wrapper process of its own (a
    process's children's peak covers every child it ever waited for, so each run gets one)."""
    probe = [sys.executable, "-c", PEAK_RSS_PROBE, str(stdin), *argv]
    output = subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout
    return int(output.strip()) / 1024


async def telegram_burst_peak_rss_mb(
    source: list[str], env: dict[str, str], db: Path, photos: list[bytes]
) -> float:
    """Peak RSS of `python -m bot` on Telegram (the tests' fake Bot API on 127.0.0.1) while one
    photo from each of len(photos) people arrives at once, read from /proc before it stops."""
    api = FakeBotAPI()
    await api.start()
    bot = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot", "--db", str(db), *source),
        env={**env, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": api.url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await api.wait_for("getUpdates", timeout=600)
        for person, data in enumerate(photos, start=1):
            await api.send_message(api.message(person, photo=api.add_photo(data)))
        await api.wait_for("sendMessage", len(photos), timeout=600)
        status = Path(f"/proc/{bot.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    finally:
        bot.terminate()
        await bot.wait()
        await api.stop()


def memory_figures(
    weights: str, folder: Path, paths: list[Path], env: dict[str, str], device: str
) -> dict[str, float]:
    """Peak RSS per backend of the zero-shot model (head cached and exported):
    `python -m inference` with one photo (about idle: the model loaded) and with 32;
    `python -m bot --console` answering 8 photos one by one; and the bot on Telegram while 32
    people send a photo at once."""
    zero_shot = ["--model", ARCHITECTURE, "--pretrained", weights]
    sources = {
        "torch": [*zero_shot, "--backend", "torch", "--device", device],
        # The default on a CPU (`--backend auto`): ONNX Runtime on the cached export.
        "onnx": [*zero_shot, "--device", "cpu"],
    }
    script = folder / "console-script.txt"
    script.write_text("".join(f"{path}\ny\n" for path in paths[:8]) + "quit\n")
    figures = {}
    for backend, source in sources.items():
        cli = [sys.executable, "-m", "inference", *source]
        figures[f"{backend}_cli_1_photo"] = peak_rss_mb([*cli, str(paths[0])], env)
        figures[f"{backend}_cli_32_photos"] = peak_rss_mb([*cli, *map(str, paths[:32])], env)
        bot = [sys.executable, "-m", "bot", "--console", "--db", str(folder / "b.db")]
        figures[f"{backend}_bot_console_8_photos"] = peak_rss_mb([*bot, *source], env, script)
        burst = [path.read_bytes() for path in paths[:32]]
        db = folder / f"telegram-{backend}.db"
        figures[f"{backend}_bot_telegram_32_at_once"] = asyncio.run(
            telegram_burst_peak_rss_mb(source, env, db, burst)
        )
    return figures


def first_start_figures(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(seconds, peak RSS of the whole process tree, peak RSS of the serving process alone) of
    `python -m inference` on a first start, whose child process builds the head and exports the
    model. The tree's peak is the sum over its processes, sampled every 20 ms: about what a
    container's memory limit counts (shared library pages are counted once per process)."""
    start = time.perf_counter()
    command = subprocess.Popen(
        [sys.executable, "-m", "inference", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tree_peak = server_peak = 0
    while command.poll() is None:
        sizes = tree_rss_kb(command.pid)
        tree_peak = max(tree_peak, sum(sizes.values()))
        server_peak = max(server_peak, sizes.get(command.pid, 0))
        time.sleep(0.02)
    if command.returncode != 0:
        raise RuntimeError(f"the first start failed with exit status {command.returncode}")
    return time.perf_counter() - start, tree_peak / 1024, server_peak / 1024


def tree_rss_kb(pid: int) -> dict[int, int]:
    """Resident size (kB) of a process and each of its descendants, from /proc."""
    sizes, pending = {}, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += map(int, (task / "children").read_text().split())
        except OSError:  # it ended between two reads
            continue
        if "VmRSS:" in status:  # not when it has ended and waits to be reaped
            sizes[current] = int(status.split("VmRSS:")[1].split()[0])
    return sizes


def timed_cli(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one whole `python -m inference` process."""
    start = time.perf_counter()
    peak = peak_rss_mb([sys.executable, "-m", "inference", *args], env)
    return time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, {ARCHITECTURE}")

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        weights = save_random_weights(folder)
        photos = [jpeg(1280, 960, seed=i) for i in range(args.images)]
        paths = []
        for i, data in enumerate(photos):
            paths.append(folder / f"photo{i:03d}.jpg")
            paths[-1].write_bytes(data)

        env = {**os.environ, "HASHTAG_CACHE_DIR": str(folder / "cache"), "LOG_LEVEL": "ERROR"}
        model_args = ["--model", ARCHITECTURE, "--pretrained", weights, "--device", args.device]
        # The first start builds the head (and, on a CPU, exports the model for ONNX Runtime).
        cold, cold_tree_peak, cold_server_peak = first_start_figures(
            [*model_args, str(paths[0])], env
        )
        warm, _ = timed_cli([*model_args, str(paths[0])], env)
        warm_torch, _ = timed_cli([*model_args, "--backend", "torch", str(paths[0])], env)
        whole_run, _ = timed_cli([*model_args, "--json", *map(str, paths)], env)

        os.environ["HASHTAG_CACHE_DIR"] = env["HASHTAG_CACHE_DIR"]
        # What `python -m inference` serves by default on this device (a CPU: ONNX Runtime on
        # the export the first start made; a GPU: torch fp16), with the engine's defaults.
        served, serving_device = load_model_from_args(build_parser().parse_args([*model_args, "x"]))
        engine = InferenceEngine(served, serving_device)
        # Up to the batch the engine uses by default (a GPU: 128, fp16; a CPU: 16).
        sizes = (1, 32, 128) if device.type == "cuda" else (1, engine.max_batch_size, 32)
        bare = {b: bare_forward_images_per_second(engine, b) for b in sizes}
        draft_ms = statistics.median(decode_ms(engine, photos[:32], True) for _ in range(3))
        full_ms = statistics.median(decode_ms(engine, photos[:32], False) for _ in range(3))
        cosine = draft_cosine(engine, photos[:16])
        end_to_end = asyncio.run(cli_images_per_second(engine, paths))
        backends = backend_comparison(folder, photos)
        memory = memory_figures(weights, folder, paths, env, str(device))
        memory["first_start_all_processes"] = cold_tree_peak
        memory["first_start_serving_process"] = cold_server_peak
        if device.type == "cuda":  # this process's own GPU peak: forward passes and engine
            memory["gpu_peak_allocated"] = torch.cuda.max_memory_allocated(device) / 2**20

    ratio = end_to_end / bare[engine.max_batch_size]
    print(
        "bare forward, images/s: "
        + " | ".join(f"batch {size} {rate:.1f}" for size, rate in bare.items())
    )
    print(
        f"CLI end-to-end, {args.images} photos 1280x960: {end_to_end:.1f} images/s "
        f"= {ratio:.2f} x bare batch-{engine.max_batch_size}, the engine default (target >= 0.75)"
    )
    print(
        f"decode to 224 px tensor: {full_ms:.1f} ms full, {draft_ms:.1f} ms draft "
        f"({full_ms / draft_ms:.1f}x); min cosine draft vs full {cosine:.4f}"
    )
    print(
        f"start-up (one image, whole process): first {cold:.1f} s, second {warm:.1f} s "
        f"(--backend torch: {warm_torch:.1f} s)"
    )
    print(f"whole CLI process on {args.images} photos: {whole_run:.1f} s")
    print("peak RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items()))
    base = backends["torch_fp32"]
    for name, figures in backends.items():
        print(
            f"{name:<11} images/s: batch 1 {figures['batch_1']:.1f} "
            f"({figures['batch_1'] / base['batch_1']:.2f}x torch), batch 32 "
            f"{figures['batch_32']:.1f} ({figures['batch_32'] / base['batch_32']:.2f}x); "
            f"min cosine to torch fp32 {figures['min_cosine']:.5f}"
        )
    print(
        json.dumps(
            {
                "device": str(device),
                "bare_images_per_s": {str(k): round(v, 2) for k, v in bare.items()},
                "cli_end_to_end_images_per_s": round(end_to_end, 2),
                "cli_vs_bare_default_batch": round(ratio, 3),
                "decode_ms_full": round(full_ms, 2),
                "decode_ms_draft": round(draft_ms, 2),
                "draft_min_cosine": round(cosine, 5),
                "startup_s_cold": round(cold, 2),
                "startup_s_cached_head": round(warm, 2),
                "startup_s_cached_head_torch": round(warm_torch, 2),
                "cli_process_s": round(whole_run, 2),
                "peak_rss_mb": {key: round(value) for key, value in memory.items()},
                "backends": {
                    name: {key: round(value, 5) for key, value in figures.items()}
                    for name, figures in backends.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
