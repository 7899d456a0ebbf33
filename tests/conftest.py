"""Shared fixtures: a tiny open_clip architecture saved to disk like real weights.

The tiny model goes through exactly the loading path users take (`--model CONFIG.json
--pretrained WEIGHTS`), only small enough to build, save and run in seconds on a CPU.
"""

import json
import os
import tempfile

# No test may reach the network: make huggingface_hub (used by open_clip downloads) fail fast
# offline, and keep caches out of the user's home. Set before anything imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HASHTAG_CACHE_DIR"] = tempfile.mkdtemp(prefix="hashtag-test-cache-")

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from inference.loading import load_zero_shot
from inference.vocab import load_vocabulary

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory) -> tuple[str, str]:
    """(model-config JSON path, .safetensors weights path) of a random tiny CLIP."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    config_path = folder / "tiny-test-clip.json"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    clip_model = open_clip.create_model("tiny-test-clip")
    weights_path = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, weights_path)
    return str(config_path), str(weights_path)


@pytest.fixture(scope="session")
def tiny_model(tiny_clip_files):
    config_path, weights_path = tiny_clip_files
    return load_zero_shot(config_path, weights_path, load_vocabulary())
