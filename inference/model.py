"""The hashtag model: an open_clip vision encoder with a linear multi-label head."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from inference.spec import ModelSpec


class HashtagModel(nn.Module):
    """Image -> (hashtag logits, L2-normalised image embedding).

    The head reads the *normalised* embedding: that makes a CLIP text embedding a valid head
    row (zero-shot), and makes the stored embeddings directly comparable by dot product.
    """

    def __init__(self, visual: nn.Module, head: nn.Linear, spec: ModelSpec):
        super().__init__()
        if head.out_features != len(spec.vocabulary):
            raise ValueError(
                f"head has {head.out_features} outputs but the vocabulary has "
                f"{len(spec.vocabulary)} hashtags"
            )
        self.visual = visual
        self.head = head
        self.spec = spec

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(pixels), dim=-1)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(pixels)
        return self.head(embedding), embedding

    @torch.inference_mode()
    def predict_batch(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the engine calls: a (B, C, H, W) float32 batch in, (sigmoid scores as float32,
        embeddings as float16) out, run on the model's own device and precision."""
        weight = self.head.weight
        logits, embeddings = self(torch.from_numpy(pixels).to(weight.device, weight.dtype))
        scores = torch.sigmoid(logits.float()).cpu().numpy()
        return scores, embeddings.to(torch.float16).cpu().numpy()

    @property
    def encoder_id(self) -> str:
        return encoder_fingerprint(self.visual.state_dict(prefix="visual."))


ENCODER_SAMPLES_PER_TENSOR = 1024


def encoder_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """Which image encoder made an embedding: a digest of the vision tower's weights.

    Stored with every suggestion, so learning from feedback uses only embeddings that the
    encoder in use would make again. A strided sample of each tensor, rounded to float16, keeps
    it fast (milliseconds for ViT-B-32) and the same on a GPU in fp16 and a CPU in fp32.
    """
    digest = hashlib.sha256()
    for name in sorted(key for key in state if key.startswith("visual.")):
        tensor = state[name].detach()
        flat = tensor.reshape(-1)
        step = max(1, flat.numel() // ENCODER_SAMPLES_PER_TENSOR)
        sample = flat[::step].to("cpu", torch.float16).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def build_vision_tower(model_cfg: dict[str, Any]) -> nn.Module:
    """Just the image tower of an open_clip config: a checkpoint needs no text tower.

    `_build_vision_tower` is the function open_clip's own CLIP classes use for this; pinning
    open_clip_torch <4 in pyproject.toml guards its signature.
    """
    return open_clip.model._build_vision_tower(
        model_cfg["embed_dim"], model_cfg["vision_cfg"], model_cfg.get("quick_gelu", False)
    )
