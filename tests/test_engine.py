"""The batched engine: batches must not change answers, and bad input must not hurt others."""

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from inference.engine import EngineBusy, InferenceEngine
from inference.images import ImageRejected
from tests.corpus import encode, jpeg, photo

CPU = torch.device("cpu")


def varied_images(count: int) -> list[bytes]:
    formats = ["JPEG", "PNG", "WEBP"]
    return [encode(photo(200 + 17 * i, 150 + 11 * i, seed=i), formats[i % 3]) for i in range(count)]


class RecordingEngine(InferenceEngine):
    """Records the batch size of every forward pass."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sizes: list[int] = []

    def forward_batch(self, pixels, model=None):
        self.batch_sizes.append(len(pixels))
        return super().forward_batch(pixels, model)


async def test_batched_results_equal_one_by_one_results(tiny_model):
    images = varied_images(12)
    async with RecordingEngine(tiny_model, CPU, max_batch_size=8, max_wait_ms=20) as engine:
        batched = await asyncio.gather(*(engine.predict(data) for data in images))
        assert max(engine.batch_sizes) > 1, "concurrent requests should share forward passes"
        assert sum(engine.batch_sizes) == len(images)
        for data, prediction in zip(images, batched, strict=True):
            scores, embeddings = engine.forward_batch(engine.preprocess(data)[None])
            np.testing.assert_allclose(prediction.scores, scores[0], atol=1e-5)
            np.testing.assert_allclose(prediction.embedding, embeddings[0], atol=1e-3)
            assert [t for t, _ in prediction.top(5)] == [
                engine.model.spec.vocabulary[i] for i in np.argsort(-scores[0])[:5]
            ]


async def test_prediction_shapes_and_embedding_norm(tiny_model):
    async with InferenceEngine(tiny_model, CPU) as engine:
        prediction = await engine.predict(jpeg())
    assert prediction.scores.shape == (997,) and prediction.scores.dtype == np.float32
    assert ((prediction.scores > 0) & (prediction.scores < 1)).all()
    assert prediction.embedding.dtype == np.float16
    assert np.linalg.norm(prediction.embedding.astype(np.float32)) == pytest.approx(1, abs=1e-2)
    top = prediction.top(3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


async def test_a_bad_image_fails_alone(tiny_model):
    async with InferenceEngine(tiny_model, CPU, max_wait_ms=20) as engine:
        results = await asyncio.gather(
            engine.predict(jpeg(seed=1)),
            engine.predict(b"not an image"),
            engine.predict(jpeg(seed=2)),
            return_exceptions=True,
        )
    assert isinstance(results[1], ImageRejected)
    assert results[0].scores.shape == results[2].scores.shape == (997,)


async def test_a_full_queue_fails_fast_with_busy(tiny_model):
    async with InferenceEngine(tiny_model, CPU, max_pending=3) as engine:
        results = await asyncio.gather(
            *(engine.predict(jpeg(seed=i)) for i in range(8)), return_exceptions=True
        )
        assert engine.pending == 0
        # Requests still go through after the burst.
        await engine.predict(jpeg())
    busy = [r for r in results if isinstance(r, EngineBusy)]
    assert len(busy) == 5
    assert all(not isinstance(r, Exception) for r in results[:3])


async def test_a_cancelled_caller_does_not_stall_the_engine(tiny_model):
    async with InferenceEngine(tiny_model, CPU, max_wait_ms=50) as engine:
        abandoned = asyncio.create_task(engine.predict(jpeg(seed=3)))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        prediction = await asyncio.wait_for(engine.predict(jpeg(seed=4)), timeout=30)
    assert prediction.scores.shape == (997,)


async def test_the_engine_must_be_started(tiny_model):
    engine = InferenceEngine(tiny_model, CPU)
    with pytest.raises(RuntimeError, match="async with"):
        await engine.predict(jpeg())
    await engine.close()


class SlowEngine(InferenceEngine):
    """Forward passes take 0.3 s, like a big batch on a busy device; records when they ran."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passes: list[tuple[float, float, int]] = []  # start, end, batch size
        self.first_started = threading.Event()

    def forward_batch(self, pixels, model=None):
        start = time.perf_counter()
        self.first_started.set()
        time.sleep(0.3)
        result = super().forward_batch(pixels, model)
        self.passes.append((start, time.perf_counter(), len(pixels)))
        return result


async def test_under_load_the_next_batch_starts_at_once(tiny_model):
    # A lone photo waits (max_wait) for company; photos that queued up during a forward pass
    # go as soon as it ends, without that wait, so a GPU is never left idle between batches.
    async with SlowEngine(tiny_model, CPU, max_wait_ms=300, max_batch_size=64) as engine:
        first = asyncio.create_task(engine.predict(jpeg(seed=1)))
        await asyncio.to_thread(engine.first_started.wait, 30)
        queued = [asyncio.create_task(engine.predict(jpeg(seed=i))) for i in (2, 3)]
        await asyncio.gather(first, *queued)
    (_, first_end, first_size), (second_start, _, second_size) = engine.passes
    assert (first_size, second_size) == (1, 2)
    assert second_start - first_end < 0.15


def test_batch_size_and_decode_threads_follow_the_device(tiny_model):
    cpu, gpu = InferenceEngine(tiny_model, CPU), InferenceEngine(tiny_model, torch.device("cuda"))
    assert (cpu.max_batch_size, cpu._decode_pool._max_workers) == (8, 2)
    assert gpu.max_batch_size == 128 and gpu._decode_pool._max_workers >= 2
    assert InferenceEngine(tiny_model, CPU, max_batch_size=32).max_batch_size == 32
