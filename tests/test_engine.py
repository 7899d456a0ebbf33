"""The batched engine: batches must not change answers, and bad input must not hurt others."""

import asyncio

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
            scores, embeddings = engine.forward_batch(engine.preprocess(data).unsqueeze(0))
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
