"""A tiny random CLIP saved like real weights (a model-config JSON and a safetensors file), so
tests and benchmarks load it through exactly the path users take, in seconds on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def save_tiny_clip(folder: Path, name: str = "tiny-test-clip") -> tuple[str, str]:
    """(model-config JSON path, .safetensors weights path) of a random tiny CLIP, seeded."""
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    clip_model = open_clip.create_model(name)
    weights_path = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, weights_path)
    return str(config_path), str(weights_path)
