"""The hashtag model: an open_clip vision encoder with a linear multi-label head."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

SPEC_FORMAT_VERSION = 1


@dataclass
class ModelSpec:
    """Everything about a model except its weights; a checkpoint stores it as config.json.

    `model_cfg` is the full open_clip model config (embed_dim, vision_cfg, text_cfg...), so a
    checkpoint can be rebuilt even when its architecture is not one open_clip ships.
    """

    architecture: str
    model_cfg: dict[str, Any]
    preprocess: dict[str, Any]
    vocabulary: list[str]
    thresholds: list[float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = SPEC_FORMAT_VERSION

    def __post_init__(self) -> None:
        # Hold exactly what config.json will hold (tuples become lists), so a spec compares
        # equal to itself after a save and a load.
        self.model_cfg = json.loads(json.dumps(self.model_cfg))
        self.preprocess = json.loads(json.dumps(self.preprocess))

    @property
    def input_side(self) -> int:
        """The longest side of the model's square-ish input, in pixels."""
        size = self.preprocess["size"]
        return max(size) if isinstance(size, list | tuple) else int(size)

    def image_transform(self, training: bool = False):
        """open_clip's own preprocessing (with its augmentation when training).

        Inference and fine-tuning share it, so the model sees the same pixels in both.
        """
        fields = dict(self.preprocess)
        if isinstance(fields["size"], list):  # open_clip wants a (height, width) tuple
            fields["size"] = tuple(fields["size"])
        cfg = open_clip.transform.PreprocessCfg(**fields)
        return open_clip.transform.image_transform_v2(cfg, is_train=training)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> ModelSpec:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("format_version", SPEC_FORMAT_VERSION)
        if version > SPEC_FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {version}; this code reads up to "
                f"{SPEC_FORMAT_VERSION}. Upgrade the hashtag-bot package."
            )
        return cls(**data)


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
