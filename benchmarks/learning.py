"""Does learning from everyone's answers help newcomers, how long does a re-fit take, and how
long does swapping the head pause serving?

    python benchmarks/learning.py [--answers 500] [--every 100]

1. Newcomers. Simulated people post photos whose true hashtags are drawn from HARRISON's label
   statistics (benchmarks/harrison.py).
   Photo embeddings (512-d, like ViT-B-32's) are the sum of a vector per true hashtag, each
   with its own visual strength (#love shows less in a photo than #beach), plus noise, plus a
   direction all photos share (CLIP's embeddings have one). The starting head is
   zero-shot-like: each hashtag's row is its vector seen through noise (as a text embedding
   sees a hashtag) plus a random amount of the shared direction (some hashtags' texts sit near
   every photo: CLIP's "hubs"), scaled like the zero-shot head. Tuned so that it ranks like a
   zero-shot head does on HARRISON: about 0.2 precision@1. The bot shows its top 10;
   each person accepts the true ones, types about half of the true ones not shown and now and
   then rejects a wrong one, written through the real store. Every `--every` answers the
   product's re-fit runs with its shipped defaults (FeedbackOptions()) and, when it passes the
   gate, its head serves from then on. After each re-fit: precision@1 and recall@5 of the
   served head for 1,000 photos of people the bot has never seen.
2. Re-fit time: 100,000 stored answers (bulk-written into a fresh database), read and re-fit.
3. Swap pause: a steady stream of photos through the real engine (a tiny vision tower, so the
   stream is fast and a pause would show), a checkpoint replaced in place and swapped in by the
   CheckpointWatcher; the longest gap between answers around the swap against the longest gap
   in a stretch without one.

Seeded throughout; the last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harrison import TagLists
from bot.operations.checkpoints import CheckpointWatcher, checkpoint_stamp
from bot.store import VERDICT_ACCEPT, VERDICT_REJECT, Store
from finetune.feedback import FeedbackOptions, refit_head
from finetune.publish import publish_checkpoint
from inference.engine import InferenceEngine
from inference.loading import load_checkpoint, save_checkpoint
from inference.model import HashtagModel, build_vision_tower
from inference.spec import ModelSpec, checkpoint_version
from inference.vocab import load_vocabulary

DIM, SHOWN, NEWCOMER_PHOTOS, PEOPLE = 512, 10, 1000, 500
HUBNESS = 0.5
PHOTO_NOISE = 0.6  # relative to one hashtag vector
TINY_VISION = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32}


class World:
    """HARRISON's tag lists, a photo-embedding model and a zero-shot-like starting head."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.vocabulary = load_vocabulary()
        self.index = {tag: i for i, tag in enumerate(self.vocabulary)}
        self.tag_lists = TagLists()
        self.vectors = self.rng.normal(size=(len(self.vocabulary), DIM)) / np.sqrt(DIM)
        self.visual_strength = self.rng.uniform(0.2, 1.0, len(self.vocabulary))
        shared = self.rng.normal(size=DIM)
        self.shared = shared / np.linalg.norm(shared)

    def photo(self) -> tuple[np.ndarray, set[str]]:
        known = []
        while not known:  # a photo with at least one vocabulary hashtag
            tags = self.tag_lists.draw(self.rng)
            known = [self.index[tag] for tag in tags if tag in self.index]
        vector = (self.visual_strength[known, None] * self.vectors[known]).sum(axis=0)
        vector += self.rng.normal(0, PHOTO_NOISE / np.sqrt(DIM), DIM)
        vector = vector / np.linalg.norm(vector) + self.shared
        return (vector / np.linalg.norm(vector)).astype(np.float32), set(tags)

    def starting_model(self) -> HashtagModel:
        """The zero-shot head's shape: rows are normalised noisy views of the tag vectors with
        some of the shared direction, logits 100 * cosine - 20, on a tiny vision tower with
        512-d output. The same head on every call: its noise has its own seed."""
        rng = np.random.default_rng(1)
        hubness = HUBNESS * rng.normal(size=(len(self.vocabulary), 1))
        text = self.vectors + rng.normal(0, 1 / np.sqrt(DIM), self.vectors.shape)
        text += hubness * self.shared
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        head = nn.Linear(DIM, len(self.vocabulary))
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(100 * text))
            head.bias.fill_(-20.0)
        return tiny_model(head, self.vocabulary)


def tiny_model(head: nn.Linear, vocabulary: list[str]) -> HashtagModel:
    torch.manual_seed(0)
    model_cfg = {"embed_dim": DIM, "vision_cfg": TINY_VISION}
    visual = build_vision_tower(model_cfg)
    preprocess = {
        "size": 32,
        "mode": "RGB",
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    spec = ModelSpec("benchmark", model_cfg, preprocess, vocabulary, provenance={})
    return HashtagModel(visual, head, spec).eval()


def ranking(model: HashtagModel, embedding: np.ndarray) -> list[str]:
    with torch.no_grad():
        logits = model.head(torch.from_numpy(embedding)).numpy()
    return [model.spec.vocabulary[i] for i in np.argsort(-logits, kind="stable")]


def newcomers(world: World, model: HashtagModel, photos: list) -> dict[str, float]:
    p1, r5 = [], []
    for embedding, truth in photos:
        top = ranking(model, embedding)[:5]
        p1.append(top[0] in truth)
        r5.append(len(set(top) & truth) / len(truth))
    return {"precision@1": float(np.mean(p1)), "recall@5": float(np.mean(r5))}


async def learning_curve(world: World, answers: int, every: int, folder: Path) -> dict:
    model = world.starting_model()
    test = [world.photo() for _ in range(NEWCOMER_PHOTOS)]
    curve = [{"answers": 0, **newcomers(world, model, test), "refit_seconds": 0.0}]
    store = await Store.open(folder / "learning.sqlite3")
    people = 50
    for count in range(1, answers + 1):
        embedding, truth = world.photo()
        person = await store.user_id("sim", f"person{world.rng.integers(people)}")
        shown = ranking(model, embedding)[:SHOWN]
        suggestion = await store.add_suggestion(
            person, "sim", embedding, [(t, 0.5) for t in shown], "bench", model.encoder_id
        )
        accepted = [t for t in shown if t in truth]
        accepted += [t for t in sorted(truth - set(shown)) if world.rng.random() < 0.5]
        rejected = [t for t in shown if t not in truth and world.rng.random() < 0.1]
        await store.record_feedback(suggestion, person, accepted, VERDICT_ACCEPT, "button")
        if rejected:
            await store.record_feedback(suggestion, person, rejected, VERDICT_REJECT, "button")
        if count % every == 0:
            start = time.perf_counter()
            photos, _ = await store.answered_photos(model.encoder_id)
            result = refit_head(model, photos, FeedbackOptions(), "bench")
            seconds = time.perf_counter() - start
            if result.passed:
                model = result.model
            point = {"answers": count, **newcomers(world, model, test), "refit_seconds": seconds}
            curve.append({**point, "passed": result.passed})
            print(
                f"after {count:>5} answers: newcomers precision@1 {point['precision@1']:.3f} "
                f"recall@5 {point['recall@5']:.3f} (re-fit {seconds:.1f} s, "
                f"{'passed' if result.passed else 'refused'}; vocabulary "
                f"{len(model.spec.vocabulary)})"
            )
    await store.close()
    return {"curve": curve}


def bulk_answers(world: World, db: Path, count: int, encoder: str) -> None:
    """`count` answered suggestions written in one transaction (the setup, not the figure)."""
    connection = sqlite3.connect(db)
    connection.executemany(
        "INSERT INTO users (id, platform, platform_user_id, created_at) VALUES (?, 'sim', ?, 0)",
        [(person, f"p{person}") for person in range(1, PEOPLE + 1)],
    )
    start = time.time() - count
    model = world.starting_model()
    for first in range(0, count, 10_000):
        rows, feedback = [], []
        batch = [world.photo() for _ in range(min(10_000, count - first))]
        embeddings = np.stack([e for e, _ in batch])
        with torch.no_grad():
            top = torch.topk(model.head(torch.from_numpy(embeddings)), SHOWN).indices.numpy()
        for offset, ((embedding, truth), best) in enumerate(zip(batch, top, strict=True)):
            suggestion = first + offset + 1
            person = suggestion % PEOPLE + 1
            shown = [world.vocabulary[i] for i in best]
            embedding_bytes = embedding.astype(np.float16).tobytes()
            shown_json = json.dumps([[tag, 0.5] for tag in shown])
            rows.append(
                (suggestion, person, start + suggestion, "bench", embedding_bytes, shown_json)
            )
            for tag in truth:
                feedback.append((suggestion, person, tag, start + suggestion))
        connection.executemany(
            "INSERT INTO suggestions (id, user_id, created_at, model_version, embedding, shown, "
            f"platform, encoder) VALUES (?, ?, ?, ?, ?, ?, 'sim', '{encoder}')",
            rows,
        )
        connection.executemany(
            "INSERT INTO feedback (suggestion_id, user_id, tag, source, verdict, created_at) "
            "VALUES (?, ?, ?, 'button', 1, ?)",
            feedback,
        )
    connection.commit()
    connection.close()


async def refit_time(world: World, count: int, folder: Path) -> float:
    db = folder / "large.sqlite3"
    store = await Store.open(db)  # creates the schema
    await store.close()
    model = world.starting_model()
    bulk_answers(world, db, count, model.encoder_id)
    start = time.perf_counter()
    store = await Store.open(db)
    photos, _ = await store.answered_photos(model.encoder_id)
    await store.close()
    read = time.perf_counter() - start
    refit_head(model, photos, FeedbackOptions(), "bench")
    total = time.perf_counter() - start
    print(f"re-fit on {len(photos):,} stored answers: {total:.1f} s ({read:.1f} s reading them)")
    return total


async def swap_pause(world: World, folder: Path) -> dict[str, float]:
    """Longest gap between answers in a stream, with and without a swap in the middle."""
    from tests.corpus import jpeg

    model = world.starting_model()
    live = folder / "live"
    save_checkpoint(model, live)
    photo = jpeg(64, 64)

    def load(directory):
        return load_checkpoint(directory), checkpoint_version(directory)

    async def stream(engine: InferenceEngine, seconds: float, swap_at: float | None) -> float:
        done: list[float] = []
        start = time.perf_counter()
        swapper = None
        while time.perf_counter() - start < seconds:
            if swap_at is not None and swapper is None and time.perf_counter() - start > swap_at:
                swapper = asyncio.create_task(watcher.check())
            await engine.predict(photo)
            done.append(time.perf_counter())
        if swapper is not None:
            assert await swapper, "the swap did not happen"
        return float(np.max(np.diff(done)))

    async with InferenceEngine(
        model, torch.device("cpu"), version="start", max_wait_ms=0
    ) as engine:
        watcher = CheckpointWatcher(engine, live, load, served_stamp=checkpoint_stamp(live))
        await stream(engine, 1.0, None)  # warm-up
        without = await stream(engine, 3.0, None)
        photos, _ = await _answers_for_swap(world, model, folder)
        result = refit_head(model, photos, FeedbackOptions(), checkpoint_version(live))
        publish_checkpoint(result.model, live, result.report, with_onnx=False)
        with_swap = await stream(engine, 3.0, 1.0)
        assert engine.model_version == checkpoint_version(live)
    print(
        f"longest gap between answers: {1000 * with_swap:.1f} ms with a swap, "
        f"{1000 * without:.1f} ms without"
    )
    return {"with_swap_ms": 1000 * with_swap, "without_ms": 1000 * without}


async def _answers_for_swap(world: World, model: HashtagModel, folder: Path):
    store = await Store.open(folder / "swap.sqlite3")
    for i in range(100):
        embedding, truth = world.photo()
        person = await store.user_id("sim", f"p{i % 10}")
        shown = [(t, 0.5) for t in ranking(model, embedding)[:SHOWN]]
        suggestion = await store.add_suggestion(
            person, "sim", embedding, shown, "b", model.encoder_id
        )
        await store.record_feedback(suggestion, person, sorted(truth), VERDICT_ACCEPT, "typed")
    answers = await store.answered_photos(model.encoder_id)
    await store.close()
    return answers


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000, help="answers for the re-fit time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    world = World(args.seed)
    print(f"{torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as folder:
        curve = await learning_curve(world, args.answers, args.every, Path(folder))
        seconds = await refit_time(world, args.large, Path(folder))
        pause = await swap_pause(world, Path(folder))
    points = curve["curve"]
    summary = {
        "newcomer_precision@1_start": round(points[0]["precision@1"], 4),
        f"newcomer_precision@1_after_{args.answers}": round(points[-1]["precision@1"], 4),
        "newcomer_precision@1_gain": round(points[-1]["precision@1"] - points[0]["precision@1"], 4),
        "newcomer_recall@5_start": round(points[0]["recall@5"], 4),
        f"newcomer_recall@5_after_{args.answers}": round(points[-1]["recall@5"], 4),
        "refit_seconds_small": round(max(p["refit_seconds"] for p in points), 2),
        f"refit_seconds_{args.large}": round(seconds, 1),
        "swap_gap_ms": round(pause["with_swap_ms"], 1),
        "no_swap_gap_ms": round(pause["without_ms"], 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
