"""What a learned checkpoint carries beside its own head.

- `base_head.safetensors`: the head it was learned on top of. Every round of learning starts
  from the base model, never from the previous round's head (see finetune/feedback.py), so the
  base head is kept with its vocabulary, thresholds and provenance: the encoder is the same, so
  the base model is always at hand, even when the operator's original checkpoint has moved.
- `learned_from.npy`: the ids of the suggestions whose answers it learned from (ids only,
  nothing of the people). When any of them is gone (a /forget, an undone answer), the next
  round replaces this head whatever the gate says: what people deleted stops being served.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from inference.model import HashtagModel
from inference.spec import ModelLoadError

BASE_HEAD_FILE = "base_head.safetensors"
LEARNED_FROM_FILE = "learned_from.npy"


def is_learned(model: HashtagModel) -> bool:
    return model.spec.provenance.get("head") == "feedback"


def save_base_head(base: HashtagModel, version: str, directory: Path) -> None:
    tensors = {
        "weight": base.head.weight.detach().float().cpu().contiguous(),
        "bias": base.head.bias.detach().float().cpu().contiguous(),
    }
    if base.spec.thresholds is not None:
        tensors["thresholds"] = torch.tensor(base.spec.thresholds, dtype=torch.float32)
    metadata = {
        "version": version,
        "vocabulary": json.dumps(base.spec.vocabulary),
        "provenance": json.dumps(base.spec.provenance),
    }
    save_file(tensors, directory / BASE_HEAD_FILE, metadata=metadata)


def base_of(learned: HashtagModel, directory: Path) -> tuple[HashtagModel, str]:
    """(the base model, its version) of a learned checkpoint loaded from `directory`."""
    path = Path(directory) / BASE_HEAD_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{directory} holds a learned head without the base model it was learned on "
            f"({learned.spec.provenance.get('base', 'unknown')}; learned heads written before "
            "every round started from the base lack it). Give the base model's options instead "
            "(--checkpoint BASE_DIR, or --model/--pretrained) and --out this directory."
        )
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            weight, bias = file.get_tensor("weight"), file.get_tensor("bias")
            has_thresholds = "thresholds" in file.keys()  # noqa: SIM118
            thresholds = file.get_tensor("thresholds").tolist() if has_thresholds else None
        vocabulary = json.loads(metadata["vocabulary"])
        provenance = json.loads(metadata["provenance"])
        version = metadata["version"]
        head = nn.Linear(weight.shape[1], weight.shape[0]).requires_grad_(False)
        head.weight.copy_(weight)
        head.bias.copy_(bias)
        spec = replace(
            learned.spec, vocabulary=vocabulary, thresholds=thresholds, provenance=provenance
        )
        return HashtagModel(learned.visual, head, spec).eval(), version
    except (KeyError, ValueError, RuntimeError, SafetensorError) as error:
        raise ModelLoadError(
            f"the base head in {path} cannot be read ({error}): give the base model's options "
            "instead (--checkpoint BASE_DIR, or --model/--pretrained)"
        ) from None


def save_learned_from(ids: np.ndarray, directory: Path) -> None:
    np.save(directory / LEARNED_FROM_FILE, np.asarray(ids, dtype=np.int64), allow_pickle=False)


def learned_from(directory: Path) -> np.ndarray | None:
    """The suggestion ids a learned checkpoint learned from; None when it does not say."""
    try:
        return np.load(Path(directory) / LEARNED_FROM_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
