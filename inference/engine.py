"""An asyncio front for the model: many concurrent callers, few batched forward passes.

Each `await engine.predict(data)` decodes its image on a small thread pool (Pillow and numpy
release the GIL, so decoding overlaps the model), then joins a queue. One batcher task takes
whatever is queued (up to `max_batch_size`, waiting at most `max_wait_ms` for company) and runs
one forward pass on a dedicated thread, so the event loop never blocks on the model. However
many threads decode, what they hold at once is bounded by the process's pixel budget
(`inference.images.DECODE_BUDGET`): ten hostile 64 MP images decode one after another.

`swap_model` serves a new model from the next batch on. Each request remembers the model it was
decoded for and is answered by that one, so photos in flight finish on the old head while new
ones go to the new head; the swap itself is one assignment, so serving does not pause.

The engine itself holds numpy arrays only: a model is anything with a `spec`, an `encoder_id`
and `predict_batch` (HashtagModel for torch, ExportedModel for the CPU engines in
inference/backends/), so serving an export never imports torch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.images import ImageLimits, decode_image
from inference.preprocess import Transform
from inference.spec import ModelSpec

log = logging.getLogger(__name__)


class EngineBusy(RuntimeError):
    """Too many requests are waiting; the caller should ask the person to retry shortly."""


@dataclass(frozen=True)
class Prediction:
    """The model's view of one image."""

    scores: np.ndarray  # sigmoid score per vocabulary hashtag, float32
    embedding: np.ndarray  # L2-normalised image embedding, float16: compact enough to store
    vocabulary: Sequence[str]
    model_version: str = ""  # which head made the scores
    encoder: str = ""  # which image encoder made the embedding (encoder_fingerprint)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k best hashtags with their scores, best first."""
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [(self.vocabulary[i], float(self.scores[i])) for i in order]


class Servable(Protocol):
    """What the engine needs of a model, whichever runtime runs it."""

    spec: ModelSpec

    @property
    def encoder_id(self) -> str: ...

    def predict_batch(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, H, W) float32 -> (sigmoid scores float32, L2-normalised embeddings float16)."""
        ...


@dataclass(frozen=True)
class ServedModel:
    """A model with what the engine needs to know about it, swapped in as one piece."""

    model: Servable
    version: str
    encoder: str
    transform: Transform


_Request = tuple[np.ndarray, ServedModel, asyncio.Future[Prediction]]
# On a CPU, batch 8 keeps ViT-B-32 within about 10% of its batch-32 throughput (2 cores;
# ONNX Runtime: the same at 8 and 16), and each halving saves 50-100 MB of working memory.
CPU_BATCH, GPU_BATCH = 8, 128


class InferenceEngine:
    """Use as `async with InferenceEngine(model, device) as engine:`."""

    def __init__(
        self,
        model: Servable,
        device: object = "cpu",
        *,
        version: str = "",
        max_batch_size: int | None = None,
        max_wait_ms: float = 5.0,
        max_pending: int = 256,
        decode_threads: int | None = None,
        limits: ImageLimits | None = None,
        on_decode: Callable[[float], None] | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        """`device`: where the model runs (a torch.device or its name), which sets the defaults.
        `version` names the model in every Prediction (and so in every stored suggestion).

        Batch size and decode threads follow the device unless given: a GPU answers hundreds of
        photos a second, so it gets batches of up to 128 and a decode thread per core (up to
        8) to keep it fed; a CPU gets the batch its engine was measured fastest at on this
        CPU (8 when unmeasured) and 2 threads, since its cores also run the model.
        `on_decode(seconds)` and `on_batch(size, seconds)` let a caller record metrics.
        """
        self.device = device
        gpu = str(device).startswith("cuda")
        measured = getattr(model, "batch_size", None)  # an export's engine, measured here
        self.max_batch_size = max_batch_size or measured or (GPU_BATCH if gpu else CPU_BATCH)
        decode_threads = decode_threads or (min(8, os.cpu_count() or 2) if gpu else 2)
        self.max_wait = max_wait_ms / 1000
        self.max_pending = max_pending
        self.limits = limits or ImageLimits()
        self._served = self._describe(model, version)
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._pending = 0
        self._batcher: asyncio.Task[None] | None = None
        self._batch: list[_Request] = []  # taken from the queue, not yet answered
        self._closing = False
        self._on_decode, self._on_batch = on_decode, on_batch
        self._failed_callbacks: set[str] = set()  # metrics callbacks that failed (logged)
        self._callback_lock = threading.Lock()

    async def __aenter__(self) -> InferenceEngine:
        self._batcher = asyncio.create_task(self._run_batches(), name="inference-batcher")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving. Every request not yet answered fails with EngineBusy, so no caller
        waits forever on a batcher that is gone (and the person is told to retry)."""
        self._closing = True
        if self._batcher:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
            self._batcher = None
        while not self._queue.empty():
            self._batch.append(self._queue.get_nowait())
        self._fail(self._batch, EngineBusy("the engine is shutting down; try again in a moment"))
        self._batch = []
        self._decode_pool.shutdown(wait=True, cancel_futures=True)
        self._model_thread.shutdown(wait=True, cancel_futures=True)

    @property
    def model(self) -> Servable:
        """The model new requests go to."""
        return self._served.model

    @property
    def engine_name(self) -> str:
        """What runs the model: an export's engine ("openvino-bf16") or torch on its device."""
        return getattr(self.model, "engine", None) or f"torch ({self.device})"

    @property
    def model_version(self) -> str:
        return self._served.version

    def swap_model(self, model: Servable, version: str) -> None:
        """Serve `model` from now on; requests already decoding or queued finish on the old one.

        Call it from the event loop's thread, with a model already on this engine's device.
        """
        self._served = self._describe(model, version)

    @staticmethod
    def _describe(model: Servable, version: str) -> ServedModel:
        return ServedModel(model, version, model.encoder_id, model.spec.eval_transform())

    @property
    def running(self) -> bool:
        return self._batcher is not None and not self._batcher.done()

    @property
    def pending(self) -> int:
        """Requests accepted but not yet answered (decoding, queued or in a batch)."""
        return self._pending

    async def predict(self, data: bytes) -> Prediction:
        """Hashtag scores for one image.

        Raises ImageRejected for bad input and EngineBusy when too many requests wait.
        """
        if self._batcher is None:
            raise RuntimeError("use the engine inside `async with InferenceEngine(...)`")
        if self._pending >= self.max_pending:
            raise EngineBusy(f"{self._pending} images are already waiting; try again in a moment")
        self._pending += 1
        served = self._served
        try:
            loop = asyncio.get_running_loop()
            pixels = await loop.run_in_executor(self._decode_pool, self._preprocess, data, served)
            if self._closing:  # close() has already failed the queue; nothing would answer
                raise EngineBusy("the engine is shutting down; try again in a moment")
            answer: asyncio.Future[Prediction] = loop.create_future()
            self._queue.put_nowait((pixels, served, answer))
            return await answer
        finally:
            self._pending -= 1

    def preprocess(self, data: bytes) -> np.ndarray:
        """Bytes -> the current model's normalised float32 input (C, H, W). Thread-safe."""
        return self._preprocess(data, self._served)

    def _preprocess(self, data: bytes, served: ServedModel) -> np.ndarray:
        start = time.perf_counter()
        image = decode_image(data, self.limits, min_side=served.model.spec.input_side)
        pixels = served.transform(image)
        self._report("on_decode", self._on_decode, time.perf_counter() - start)
        return pixels

    def _report(self, name: str, callback: Callable[..., None] | None, *args: float) -> None:
        """Call a metrics callback; a failure never fails the photo, and is logged only the
        first time (a broken metrics backend would otherwise log on every photo). Later calls
        still go through, so metrics come back if the failure was passing."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            with self._callback_lock:
                first = name not in self._failed_callbacks
                self._failed_callbacks.add(name)
            if first:
                log.exception("the %s callback failed; later failures are not logged", name)

    @staticmethod
    def _fail(requests: Sequence[_Request], error: BaseException) -> None:
        for _, _, answer in requests:
            if not answer.done():
                answer.set_exception(error)

    def forward_batch(
        self, pixels: np.ndarray, model: Servable | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass: (scores, embeddings) for a (B, C, H, W) batch."""
        return (model or self.model).predict_batch(pixels)

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # self._batch, not a local: close() fails whatever it holds when it cancels us.
            self._batch = batch = [await self._queue.get()]
            self._take_queued(batch)
            # Alone: wait briefly for company. Others already waiting mean the engine is under
            # load: start at once, so the model (a GPU above all) never idles between batches.
            if len(batch) == 1 and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
                self._take_queued(batch)
            live = [request for request in batch if not request[2].done()]
            # Usually one group; two only in the batch that straddles a swap.
            groups: dict[int, list[_Request]] = {}
            for request in live:
                groups.setdefault(id(request[1]), []).append(request)
            for group in groups.values():
                try:
                    await self._answer(loop, group)
                except Exception as error:  # e.g. CUDA out of memory: fail this batch only
                    self._fail(group, error)
            self._batch = []

    async def _answer(self, loop: asyncio.AbstractEventLoop, group: list[_Request]) -> None:
        served = group[0][1]
        stacked = np.stack([pixels for pixels, _, _ in group])
        start = time.perf_counter()
        scores, embeddings = await loop.run_in_executor(
            self._model_thread, self.forward_batch, stacked, served.model
        )
        self._report("on_batch", self._on_batch, len(group), time.perf_counter() - start)
        vocabulary = served.model.spec.vocabulary
        for row, (_, _, answer) in enumerate(group):
            if not answer.done():
                answer.set_result(
                    Prediction(
                        scores[row], embeddings[row], vocabulary, served.version, served.encoder
                    )
                )

    def _take_queued(self, batch: list[_Request]) -> None:
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
