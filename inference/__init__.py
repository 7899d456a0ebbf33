"""Image -> hashtags: the model, the image decoder and the batched engine.

The pieces most callers need are re-exported here.
"""

from inference.engine import EngineBusy, InferenceEngine, Prediction
from inference.images import ImageLimits, ImageRejected
from inference.model import HashtagModel, ModelSpec

__all__ = [
    "EngineBusy",
    "HashtagModel",
    "ImageLimits",
    "ImageRejected",
    "InferenceEngine",
    "ModelSpec",
    "Prediction",
]
