"""Inference throughput per engine, decode cost, memory and start-up time for ViT-B-32.

    python benchmarks/inference.py [--device auto|cpu|cuda] [--images 128]

Every CPU engine (torch fp32 and bf16, ONNX Runtime fp32 and int8, OpenVINO f32 and bf16)
runs the same exported checkpoint in a process of its own, at batches of 1, 8 and 32, with its
peak memory and its agreement with torch fp32 on the calibration photos. The CLI's marginal
rate (what one more photo costs once the model is loaded) is measured on the product's default
path, against the fastest bare engine of the same run.

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

from inference.backends.choice import ENGINES
from inference.cli import build_parser
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


def engine_table(checkpoint: Path, folder: Path, seconds: float = 4) -> dict[str, dict]:
    """Each engine in its own process (so its peak RSS is its own): images/s at each batch,
    peak RSS, and agreement with torch fp32 on the 64 calibration photos."""
    from inference.backends.calibration import agreement
    from inference.backends.choice import ENGINES

    results, reference = {}, None
    for name in ("torch", "torch-bf16", *ENGINES):
        if name in ENGINES and not ENGINES[name].available():
            continue
        outputs = folder / f"outputs-{name}.npz"
        worker = [sys.executable, str(Path(__file__).with_name("engine_worker.py")), name]
        worker.append(str(checkpoint))
        done = subprocess.run(
            [*worker, str(outputs), str(seconds)], capture_output=True, text=True, check=True
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        saved = np.load(outputs)
        mine = saved["scores"], saved["embeddings"]
        reference = reference or mine  # torch fp32 runs first
        measured = agreement(*mine, reference)
        figures["min_cosine"], figures["top5_agreement"] = (
            measured.min_cosine,
            measured.top5_agreement,
        )
        results[name] = figures
    return results


def cli_marginal_images_per_second(
    model_args: list[str], paths: list[Path], env: dict[str, str]
) -> tuple[float, float, float]:
    """(marginal images/s, seconds for one photo, seconds for all) of whole `python -m
    inference --json` processes on the default path: what each photo beyond the first costs
    once the model is loaded, read, decode, batch and format included."""
    one, _ = timed_cli([*model_args, "--json", str(paths[0])], env)
    every, _ = timed_cli([*model_args, "--json", *map(str, paths)], env)
    return (len(paths) - 1) / (every - one), one, every


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
        # The default on a CPU (`--backend auto`): the engine chosen on the cached export.
        "default": [*zero_shot, "--device", "cpu"],
        # Each engine `auto` may choose, forced: what the bot needs if this CPU picks it.
        **{
            name: [*zero_shot, "--device", "cpu", "--backend", name]
            for name, engine in ENGINES.items()
            if engine.candidate and engine.available()
        },
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
        # The first start builds the head (and, on a CPU, exports the model and measures the
        # engines on it).
        cold, cold_tree_peak, cold_server_peak = first_start_figures(
            [*model_args, str(paths[0])], env
        )
        warm, _ = timed_cli([*model_args, str(paths[0])], env)
        warm_torch, _ = timed_cli([*model_args, "--backend", "torch", str(paths[0])], env)
        marginal, _, whole_run = cli_marginal_images_per_second(model_args, paths, env)

        os.environ["HASHTAG_CACHE_DIR"] = env["HASHTAG_CACHE_DIR"]
        # What `python -m inference` serves by default on this device (a CPU: the engine the
        # first start chose; a GPU: torch fp16), with the engine's defaults.
        served, serving_device = load_model_from_args(build_parser().parse_args([*model_args, "x"]))
        engine = InferenceEngine(served, serving_device)
        draft_ms = statistics.median(decode_ms(engine, photos[:32], True) for _ in range(3))
        full_ms = statistics.median(decode_ms(engine, photos[:32], False) for _ in range(3))
        cosine = draft_cosine(engine, photos[:16])
        if device.type == "cuda":
            engines = {
                "torch-fp16": {
                    "images_per_s": {
                        str(b): bare_forward_images_per_second(engine, b) for b in (1, 32, 128)
                    }
                }
            }
        else:
            engines = engine_table(exported_checkpoint(folder), folder)
        memory = memory_figures(weights, folder, paths, env, str(device))
        memory["first_start_all_processes"] = cold_tree_peak
        memory["first_start_serving_process"] = cold_server_peak
        if device.type == "cuda":  # this process's own GPU peak: forward passes and engine
            memory["gpu_peak_allocated"] = torch.cuda.max_memory_allocated(device) / 2**20

    best = {name: max(f["images_per_s"].values()) for name, f in engines.items()}
    fastest = max(best, key=best.__getitem__)
    print(f"served by default: {engine.engine_name}, batches of {engine.max_batch_size}")
    print("bare engines, images/s at batch " + " / ".join(map(str, (1, 8, 32))) + ":")
    for name, figures in engines.items():
        rates = " / ".join(f"{rate:.1f}" for rate in figures["images_per_s"].values())
        extra = ""
        if "min_cosine" in figures:
            extra = (
                f"; peak {figures['peak_rss_mb']:.0f} MB; vs torch fp32: cosine >= "
                f"{figures['min_cosine']:.5f}, same top-5 on {figures['top5_agreement']:.0%}"
            )
        print(f"  {name:<14} {rates}{extra}")
    ratios = {"fastest_bare": best[fastest]}
    for name, batch in (("torch-bf16", "32"), ("torch", "32")):
        if name in engines:
            ratios[name] = engines[name]["images_per_s"][batch]
    print(
        f"CLI marginal on {args.images} photos 1280x960 (default path): {marginal:.1f} images/s"
        + "".join(f" = {marginal / rate:.2f}x {name}" for name, rate in ratios.items())
        + f" (fastest bare: {fastest})"
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
    print(
        json.dumps(
            {
                "device": str(device),
                "served_engine": engine.engine_name,
                "served_batch_size": engine.max_batch_size,
                "cli_marginal_images_per_s": round(marginal, 2),
                "cli_marginal_vs": {k: round(marginal / v, 3) for k, v in ratios.items()},
                "decode_ms_full": round(full_ms, 2),
                "decode_ms_draft": round(draft_ms, 2),
                "draft_min_cosine": round(cosine, 5),
                "startup_s_cold": round(cold, 2),
                "startup_s_cached_head": round(warm, 2),
                "startup_s_cached_head_torch": round(warm_torch, 2),
                "cli_process_s": round(whole_run, 2),
                "peak_rss_mb": {key: round(value) for key, value in memory.items()},
                "engines": engines,
            }
        )
    )


def exported_checkpoint(folder: Path) -> Path:
    """ViT-B-32 with random weights and a random head, saved and exported as users do."""
    from benchmarks.finetune import random_vit_b_32
    from finetune.export import export_checkpoint
    from inference.loading import save_checkpoint

    checkpoint = folder / "vit-b-32-checkpoint"
    save_checkpoint(random_vit_b_32(torch.device("cpu")).eval(), checkpoint)
    export_checkpoint(checkpoint)
    return checkpoint


if __name__ == "__main__":
    main()
