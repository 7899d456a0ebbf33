"""Does learning from everyone's answers help newcomers, how long does a re-fit take, and how
long does swapping the head pause serving?

    python benchmarks/learning.py [--answers 600] [--every 200]

1. Newcomers, on data the bot itself wrote. People chat through the real HashtagService (the
   real engine and store) with a real encoder: the tests' tiny random CLIP, made and loaded
   through the same path as real weights, so its zero-shot head knows nothing. Each person
   ticks the true hashtags among those shown and types the others. Every `--every` answers the
   product's re-fit runs with its shipped defaults (but --min-days 1: these answers are
   seconds apart) and, when it passes the gate, serves from then on. After each: precision@1
   and recall@5 on photos nobody answered, embedded as the bot embeds what it is sent, for the
   served head, a plain logistic regression on the same stored embeddings (scikit-learn,
   standardised) and popularity among the stored answers. Nothing scored learned from
   anything but the stored answers. Two populations (benchmarks/tagged_photos.py), each in a
   database of its own:
   - hard (the headline: the served head against the logistic regression): HARRISON's 997
     hashtags and tag lists; a photo shows its topic's look, a small disc for each hashtag
     it carries only with that hashtag's own chance, and what no hashtag names (background,
     objects nobody tagged, exposure, noise); 30 % of the answered photos are re-shoots of
     earlier answered scenes, and the 1,000 scored photos are scenes nobody answered a shot of;
   - easy: twelve hashtags shown as large discs in fixed places whenever carried, 300 scored
     photos: the pixels all but spell the answers, so its figures are near 1.
2. Re-fit time: 100,000 stored answers (bulk-written into a fresh database, 997 hashtags and
   512-d embeddings drawn from HARRISON's label statistics), read and re-fitted. These
   embeddings are sums of the true hashtags' vectors: fit for a timing, never scored.
3. Swap pause: a steady stream of photos through the real engine (a tiny vision tower, so the
   stream is fast and a pause would show), a checkpoint replaced in place and swapped in by the
   CheckpointWatcher; the longest gap between answers around the swap against the longest gap
   in a stretch without one.

Seeded throughout; the last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.harrison import TagLists
from benchmarks.tagged_photos import HardWorld, TaggedPhoto, tagged_photos
from benchmarks.tiny_clip import save_tiny_clip
from bot.core.service import HashtagService, UserRef
from bot.operations.checkpoints import CheckpointWatcher, checkpoint_stamp
from bot.store import VERDICT_ACCEPT, Store
from bot.store.records import ShownEntry
from finetune.feedback import FeedbackOptions, refit_head
from finetune.publish import publish_checkpoint
from inference.engine import InferenceEngine
from inference.loading import load_checkpoint, load_zero_shot, save_checkpoint
from inference.model import HashtagModel, build_vision_tower
from inference.spec import ModelSpec, checkpoint_version
from inference.vocab import load_vocabulary

DIM, SHOWN, NEWCOMER_PHOTOS, PEOPLE, CHAT_PEOPLE = 512, 10, 300, 500, 20
HARD_UNSEEN_PHOTOS = 1000  # more than the easy population's: its figures are small and noisy
RESHOOT_SHARE = 0.3  # of the hard population's answered photos: another shot of an earlier scene
HUBNESS = 0.5
PHOTO_NOISE = 0.6  # relative to one hashtag vector
TINY_VISION = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32}


class World:
    """HARRISON's tag lists, a photo-embedding model and a zero-shot-like starting head, for
    the timings (sections 2 and 3): a photo's embedding is built from its true hashtags'
    vectors, so nothing is ever scored on these."""

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


def quality(scores: np.ndarray, candidates: list[str], truth: list[tuple[str, ...]]) -> dict:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    p1 = [candidates[row[0]] in tags for row, tags in zip(order, truth, strict=True)]
    r5 = [
        len({candidates[i] for i in row} & set(tags)) / len(tags)
        for row, tags in zip(order, truth, strict=True)
    ]
    return {"precision@1": round(float(np.mean(p1)), 4), "recall@5": round(float(np.mean(r5)), 4)}


def tiny_clip(folder: Path) -> HashtagModel:
    """The tests' tiny random CLIP, saved and loaded like real weights."""
    return load_zero_shot(*save_tiny_clip(folder, "tiny-bench-clip"), load_vocabulary())


@dataclass
class Population:
    """Photos people answer, in the order they post them, and photos nobody answered."""

    name: str
    answered: list[TaggedPhoto]
    unseen: list[TaggedPhoto]


def easy_population(answers: int, seed: int) -> Population:
    """Twelve hashtags, each a large disc of its own colour in its own place: what the
    pixels show is what the photo is tagged."""
    return Population(
        "easy", tagged_photos(answers, seed), tagged_photos(NEWCOMER_PHOTOS, seed + 1000)
    )


def hard_population(answers: int, seed: int) -> Population:
    """HARRISON-like photos (benchmarks/tagged_photos.HardWorld), with re-shoots among the
    answered ones; the unseen photos are scenes nobody answered a shot of."""
    world = HardWorld(TagLists(), load_vocabulary())
    answered = world.photos(answers, seed + 2000, RESHOOT_SHARE)
    unseen = world.photos(HARD_UNSEEN_PHOTOS, seed + 3000)
    shared = {photo.scene for photo in answered} & {photo.scene for photo in unseen}
    assert not shared, f"{len(shared)} unseen photos are shots of answered scenes"
    return Population("hard", answered, unseen)


def jpeg(photo: TaggedPhoto) -> bytes:
    image = io.BytesIO()
    photo.image.save(image, format="JPEG", quality=92)
    return image.getvalue()


def embed(engine: InferenceEngine, model: HashtagModel, photos) -> np.ndarray:
    """The embeddings the bot would store for these photos: the same JPEG, decoded and
    preprocessed by the engine."""
    pixels = torch.from_numpy(np.stack([engine.preprocess(jpeg(photo)) for photo in photos]))
    with torch.no_grad():
        return model.embed(pixels).numpy()


def plain_regression(stored: np.ndarray, labels: list[tuple[str, ...]], test: np.ndarray):
    """A logistic regression per hashtag on the stored embeddings: the yardstick.
    (newton-cholesky: the same L2-regularised fit as scikit-learn's default solver, faster on
    a thousand hashtags.)"""
    tags = sorted({tag for photo_tags in labels for tag in photo_tags})
    scores = np.zeros((len(test), len(tags)))
    for column, tag in enumerate(tags):
        target = [tag in photo_tags for photo_tags in labels]
        fitted = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky"))
        scores[:, column] = fitted.fit(stored, target).decision_function(test)
    return scores, tags


async def learning_curve(population: Population, every: int, folder: Path) -> dict:
    """People answer `population.answered` through the real service; every `every` answers the
    shipped re-fit runs on what the store holds, and each head is scored on the unseen photos
    against their hashtags. Every model scored learned only from what the store holds."""
    base = tiny_clip(folder)
    model, version = base, "zero-shot:tiny-bench"
    truth = [photo.tags for photo in population.unseen]
    store = await Store.open(folder / f"learning-{population.name}.sqlite3")
    curve = []
    async with InferenceEngine(base, torch.device("cpu"), version=version) as engine:
        test_embeddings = embed(engine, base, population.unseen)
        service = HashtagService(engine, store, rate_limit=None)
        for count, photo in enumerate(population.answered, 1):
            person = UserRef("sim", f"person{count % CHAT_PEOPLE}")
            suggestion = await service.suggest(person, [jpeg(photo)])
            shown = [tag for tag, _ in suggestion.tags]
            ticked = [tag for tag in shown if tag in photo.tags]
            if ticked:
                await service.accept(person, suggestion.id, ticked, source="button")
            typed = [tag for tag in photo.tags if tag not in shown]
            if typed:
                await service.add_own_tags(person, suggestion.id, " ".join(f"#{t}" for t in typed))
            if count % every:
                continue
            answered = await store.answered_photos(base.encoder_id)
            start = time.perf_counter()
            result = refit_head(base, answered.photos, FeedbackOptions(min_days=1), version, model)
            seconds = time.perf_counter() - start
            if result.passed:
                model = result.model
                engine.swap_model(model, f"learned-{count}")
            stored = np.stack([p.embedding for p in answered.photos])
            labels = [tuple(t for t, v in p.verdicts.items() if v > 0) for p in answered.photos]
            plain, tags = plain_regression(stored, labels, test_embeddings)
            popular = Counter(tag for photo_tags in labels for tag in photo_tags)
            most = sorted(popular, key=lambda tag: (-popular[tag], tag))
            unseen = len(test_embeddings)
            point = {
                "answers": count,
                "served": quality(scores_of(model, test_embeddings), model.spec.vocabulary, truth),
                "zero_shot": quality(scores_of(base, test_embeddings), base.spec.vocabulary, truth),
                "plain_logistic_regression": quality(plain, tags, truth),
                "popularity": quality(np.tile(-np.arange(len(most)), (unseen, 1)), most, truth),
                "refit_seconds": round(seconds, 2),
                "passed": result.passed,
            }
            curve.append(point)
            print(
                f"{population.name}, after {count:>4} answers: newcomers precision@1 / recall@5 "
                + ", ".join(
                    f"{name} {point[key]['precision@1']:.3f} / {point[key]['recall@5']:.3f}"
                    for name, key in (
                        ("served", "served"),
                        ("logistic regression", "plain_logistic_regression"),
                        ("popularity", "popularity"),
                        ("zero-shot", "zero_shot"),
                    )
                )
                + f" (re-fit {seconds:.1f} s, {'passed' if result.passed else 'refused'})"
            )
    await store.close()
    return {"curve": curve}


def scores_of(model: HashtagModel, embeddings: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.head(torch.from_numpy(embeddings)).numpy()


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
    photos = (await store.answered_photos(model.encoder_id)).photos
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
        photos = (await _answers_for_swap(world, model, folder)).photos
        result = refit_head(model, photos, FeedbackOptions(min_days=1), checkpoint_version(live))
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
        shown = [ShownEntry(t, 0.5) for t in ranking(model, embedding)[:SHOWN]]
        suggestion = await store.add_suggestion(
            person, "sim", embedding, shown, "b", model.encoder_id
        )
        await store.record_feedback(suggestion, person, sorted(truth), VERDICT_ACCEPT, "typed")
    answers = await store.answered_photos(model.encoder_id)
    await store.close()
    return answers


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--large", type=int, default=100_000, help="answers for the re-fit time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    world = World(args.seed)
    print(f"{torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as folder:
        easy = easy_population(args.answers, args.seed)
        curve = await learning_curve(easy, args.every, Path(folder))
        hard = await learning_curve(
            hard_population(args.answers, args.seed), args.every, Path(folder)
        )
        seconds = await refit_time(world, args.large, Path(folder))
        pause = await swap_pause(world, Path(folder))
    last, hard_last = curve["curve"][-1], hard["curve"][-1]
    summary = {
        "answers": last["answers"],
        "newcomer_precision@1_served": last["served"]["precision@1"],
        "newcomer_precision@1_plain_logistic_regression": last["plain_logistic_regression"][
            "precision@1"
        ],
        "newcomer_precision@1_popularity": last["popularity"]["precision@1"],
        "newcomer_precision@1_zero_shot": last["zero_shot"]["precision@1"],
        "newcomer_recall@5_served": last["served"]["recall@5"],
        "newcomer_recall@5_plain_logistic_regression": last["plain_logistic_regression"][
            "recall@5"
        ],
        "hard_answers": hard_last["answers"],
        "hard_unseen_photos": HARD_UNSEEN_PHOTOS,
    }
    for name, key in (
        ("served", "served"),
        ("logistic", "plain_logistic_regression"),
        ("popularity", "popularity"),
        ("zero_shot", "zero_shot"),
    ):
        for metric in ("precision@1", "recall@5"):
            summary[f"hard_{name}_{metric}"] = hard_last[key][metric]
    summary["hard_refits_passed"] = sum(point["passed"] for point in hard["curve"])
    summary["hard_refits"] = len(hard["curve"])
    summary |= {
        "refit_seconds_small": max(p["refit_seconds"] for p in curve["curve"] + hard["curve"]),
        f"refit_seconds_{args.large}": round(seconds, 1),
        "swap_gap_ms": round(pause["with_swap_ms"], 1),
        "no_swap_gap_ms": round(pause["without_ms"], 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
