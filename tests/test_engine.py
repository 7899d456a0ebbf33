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


async def until(condition, timeout: float = 30) -> None:
    """Wait (polling) until `condition()` holds; fail the test if it never does."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


class GatedEngine(InferenceEngine):
    """Forward passes wait for `gate`, so a test decides what queues up behind one.

    b"misshapen" decodes to an array that cannot be stacked with real photos.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.forward_started = threading.Event()

    def forward_batch(self, pixels, model=None):
        self.forward_started.set()
        self.gate.wait(30)
        return super().forward_batch(pixels, model)

    def _preprocess(self, data, served):
        if data == b"misshapen":
            return np.zeros((3, 2), np.float32)
        return super()._preprocess(data, served)


async def test_a_batch_that_cannot_be_stacked_fails_alone(tiny_model):
    async with GatedEngine(tiny_model, CPU, max_wait_ms=0) as engine:
        first = asyncio.create_task(engine.predict(jpeg(seed=1)))
        await asyncio.to_thread(engine.forward_started.wait, 30)
        # These two queue up behind the first pass and so go into one batch together.
        good = asyncio.create_task(engine.predict(jpeg(seed=2)))
        bad = asyncio.create_task(engine.predict(b"misshapen"))
        await until(lambda: engine._queue.qsize() == 2)
        engine.gate.set()
        results = await asyncio.wait_for(
            asyncio.gather(first, good, bad, return_exceptions=True), timeout=30
        )
        after = await asyncio.wait_for(engine.predict(jpeg(seed=3)), timeout=30)
    assert results[0].scores.shape == after.scores.shape == (997,)
    assert isinstance(results[1], ValueError) and isinstance(results[2], ValueError)


async def test_a_failing_metrics_callback_is_logged_once_and_ignored(tiny_model, caplog):
    calls = []

    def broken_metric(*args) -> None:
        calls.append(args)
        raise ZeroDivisionError("metrics backend is broken")

    async with InferenceEngine(
        tiny_model, CPU, max_batch_size=1, on_decode=broken_metric, on_batch=broken_metric
    ) as engine:
        for seed in range(3):
            prediction = await asyncio.wait_for(engine.predict(jpeg(seed=seed)), timeout=30)
            assert prediction.scores.shape == (997,)
    failures = [r for r in caplog.records if "metrics backend is broken" in str(r.exc_info)]
    assert sorted(r.getMessage() for r in failures) == [
        "the on_batch callback failed; later failures are not logged",
        "the on_decode callback failed; later failures are not logged",
    ]
    assert len(calls) == 6, "each photo still reports its decode and its batch"


async def test_closing_fails_every_request_still_waiting(tiny_model):
    # max_wait of a minute: the first photo sits in the batcher waiting for company, the
    # second (max_batch_size=1) in the queue behind it, when the engine closes.
    engine = InferenceEngine(tiny_model, CPU, max_batch_size=1, max_wait_ms=60_000)
    async with engine:
        in_batch = asyncio.create_task(engine.predict(jpeg(seed=1)))
        await until(lambda: len(engine._batch) == 1)
        queued = asyncio.create_task(engine.predict(jpeg(seed=2)))
        await until(lambda: engine._queue.qsize() == 1)
    results = await asyncio.wait_for(
        asyncio.gather(in_batch, queued, return_exceptions=True), timeout=30
    )
    for result in results:
        assert isinstance(result, EngineBusy) and "shutting down" in str(result)
