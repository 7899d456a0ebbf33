"""Prometheus metrics for the bot (served at /metrics when --metrics-port is set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from inference.engine import InferenceEngine

PHOTOS = Counter("hashtag_photos", "Posts answered with hashtags", ["platform"])
STAGE_SECONDS = Histogram(
    "hashtag_stage_seconds",
    "Time spent per stage of answering a photo",
    ["stage"],  # download, decode, inference, reply
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "hashtag_batch_size", "Images per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
QUEUE_DEPTH = Gauge("hashtag_engine_pending", "Images accepted by the engine, not yet answered")
FEEDBACK = Counter("hashtag_feedback_events", "Feedback written", ["kind"])
ERRORS = Counter("hashtag_errors", "Failures, by kind", ["kind"])

# Online quality per model version (see README, "Reading the quality metrics"): divide by
# hashtag_suggestions_shown_total to compare heads, e.g. the share of first hashtags accepted.
SHOWN = Counter("hashtag_suggestions_shown", "Suggestions shown", ["model_version"])
ACCEPTED = Counter("hashtag_tags_accepted", "Shown hashtags accepted", ["model_version"])
REJECTED = Counter("hashtag_tags_rejected", "Shown hashtags rejected", ["model_version"])
FIRST_ACCEPTED = Counter(
    "hashtag_first_tag_accepted", "Suggestions whose first hashtag was accepted", ["model_version"]
)
MODEL_SWAPS = Counter("hashtag_model_swaps", "Checkpoints swapped in, or refused", ["outcome"])


def record_decode(seconds: float) -> None:
    """InferenceEngine's on_decode."""
    STAGE_SECONDS.labels("decode").observe(seconds)


def record_batch(size: int, seconds: float) -> None:
    """InferenceEngine's on_batch."""
    BATCH_SIZE.observe(size)
    STAGE_SECONDS.labels("inference").observe(seconds)


def watch_queue(engine: InferenceEngine) -> None:
    QUEUE_DEPTH.set_function(lambda: engine.pending)
