"""Image -> hashtags: the model, the image decoder and the batched engine.

The pieces most callers need are re-exported here; none of them imports torch, so serving with
ONNX Runtime stays lean. The torch model is `inference.model.HashtagModel`.
"""

from inference.engine import EngineBusy, InferenceEngine, Prediction
from inference.images import ImageLimits, ImageRejected
from inference.spec import ModelSpec

__all__ = [
    "EngineBusy",
    "ImageLimits",
    "ImageRejected",
    "InferenceEngine",
    "ModelSpec",
    "Prediction",
]
