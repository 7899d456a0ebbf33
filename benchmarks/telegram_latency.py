"""Telegram photo-in -> hashtags-out latency, through the real PTB application.

    python benchmarks/telegram_latency.py [--photos-per-user 4]

The bot runs as in production (PTB Application, polling, the batched engine, SQLite) against
the tests' fake Bot API on 127.0.0.1, with the ViT-B-32 architecture (random weights: the same
compute) on this machine's device. Each photo is offered in Telegram's sizes (320x240 and
1280x960 JPEGs); the bot downloads the smallest one that covers the model's input.
Latency is from the update being available to getUpdates until the reply's sendMessage
arrives. Baseline, same run: the engine alone (decode + batched forward) on the same photos.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.finetune import random_vit_b_32
from bot.adapters.telegram_bot import ALLOWED_UPDATES, build_application
from bot.core.ratelimit import RateLimit
from bot.core.service import HashtagService
from bot.store import Store
from inference.device import inference_dtype, resolve_device
from inference.engine import InferenceEngine
from inference.loading import prepare_for_inference
from inference.vocab import load_vocabulary
from tests.corpus import jpeg
from tests.fake_telegram import TOKEN, FakeBotAPI

SIZES = ((320, 240), (1280, 960))


async def one_user(fake: FakeBotAPI, user_id: int, photos: list[dict], latencies: list[float]):
    """Send photos one after another, each after the previous reply, like a person would."""
    for photo in photos:
        replies = _replies_to(fake, user_id)
        start = time.perf_counter()
        await fake.send_message(fake.message(user_id, photo=photo))
        while _replies_to(fake, user_id) == replies:
            await asyncio.sleep(0.002)
        latencies.append(time.perf_counter() - start)


def _replies_to(fake: FakeBotAPI, chat_id: int) -> int:
    return sum(1 for call in fake.calls_to("sendMessage") if int(call["chat_id"]) == chat_id)


async def scenario(fake, users: int, per_user: int, photo_sets) -> tuple[list[float], float]:
    latencies: list[float] = []
    start = time.perf_counter()
    people = [photo_sets[u % len(photo_sets)][:per_user] for u in range(users)]
    await asyncio.gather(*(one_user(fake, 1000 + u, p, latencies) for u, p in enumerate(people)))
    return latencies, users * per_user / (time.perf_counter() - start)


async def engine_baseline(engine: InferenceEngine, photos: list[bytes], concurrent: int):
    """The engine alone: per-photo latency one at a time, and throughput with `concurrent`."""
    single = []
    for data in photos[:10]:
        start = time.perf_counter()
        await engine.predict(data)
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    batch = (photos * (concurrent // len(photos) + 1))[: concurrent * 4]
    await asyncio.gather(*(engine.predict(data) for data in batch))
    return float(np.median(single)), len(batch) / (time.perf_counter() - start)


def percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{p}": round(float(np.percentile(values, p)) * 1000, 1) for p in (50, 95, 99)}


async def main_async(args) -> dict:
    device = resolve_device(args.device)
    model = random_vit_b_32(torch.device("cpu"))
    model.spec.vocabulary[:] = load_vocabulary()
    model = prepare_for_inference(model, device, inference_dtype(device))
    rng = np.random.default_rng(0)
    variants = [
        {size: jpeg(*size, seed=int(seed)) for size in SIZES} for seed in rng.integers(0, 10_000, 8)
    ]
    fake = FakeBotAPI()
    await fake.start()
    results = {"device": str(device)}
    with tempfile.TemporaryDirectory() as temp:
        store = await Store.open(Path(temp) / "bench.sqlite3")
        async with InferenceEngine(model, device) as engine:
            single, engine_rate = await engine_baseline(engine, [v[320, 240] for v in variants], 32)
            service = HashtagService(engine, store, rate_limit=RateLimit(10_000, 1_000))
            application = build_application(service, TOKEN, fake.url)
            async with application:
                await application.start()
                await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
                photo_sets = [
                    [fake.add_photo(variants[(u + i) % len(variants)], SIZES) for i in range(64)]
                    for u in range(32)
                ]
                await scenario(fake, 1, 3, photo_sets)  # warm-up
                for users, per_user in ((1, args.photos_per_user * 4), (32, args.photos_per_user)):
                    latencies, rate = await scenario(fake, users, per_user, photo_sets)
                    results[f"{users}_users"] = {
                        **percentiles(latencies),
                        "photos_per_s": round(rate, 2),
                    }
                await application.updater.stop()
                await application.stop()
        await store.close()
    await fake.stop()
    results["engine_alone"] = {
        "single_ms": round(single * 1000, 1),
        "photos_per_s_32": round(engine_rate, 2),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--photos-per-user", type=int, default=4)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    engine = results["engine_alone"]
    print(f"device: {results['device']}, ViT-B-32, torch threads {torch.get_num_threads()}")
    print(
        f"engine alone: {engine['single_ms']} ms per photo, "
        f"{engine['photos_per_s_32']} photos/s with 32 waiting"
    )
    for users in (1, 32):
        r = results[f"{users}_users"]
        print(
            f"{users:>2} concurrent user(s): p50 {r['p50']} ms, p95 {r['p95']} ms, "
            f"p99 {r['p99']} ms, {r['photos_per_s']} photos/s"
        )
    latency_ratio = results["1_users"]["p50"] / engine["single_ms"]
    throughput_ratio = results["32_users"]["photos_per_s"] / engine["photos_per_s_32"]
    print(
        f"bot vs engine alone: single-user p50 {latency_ratio:.2f}x the engine's latency; "
        f"32-user throughput {throughput_ratio:.2f}x"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
