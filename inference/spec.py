"""What describes a model without loading it: config.json, file names, version names.

Nothing here imports torch, so serving with ONNX Runtime stays lean (see inference/preprocess.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inference.preprocess import Transform, eval_transform
from inference.spec_checks import ConfigProblem, check_spec_fields

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

SPEC_FORMAT_VERSION = 1

# The settings of a 100,000-hashtag checkpoint take about 3 MB; a bigger file is no config.
MAX_CONFIG_BYTES = 16 * 2**20
REWRITE_ADVICE = (
    "This config.json is damaged or was not written by `python -m finetune`: write the "
    "checkpoint again, or serve another one."
)


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
        """open_clip's own preprocessing (with its augmentation when training), for training.

        Serving uses `eval_transform()`, which gives the same pixels without torch.
        """
        import open_clip  # only training and evaluation need torch here

        fields = dict(self.preprocess)
        if isinstance(fields["size"], list):  # open_clip wants a (height, width) tuple
            fields["size"] = tuple(fields["size"])
        cfg = open_clip.transform.PreprocessCfg(**fields)
        return open_clip.transform.image_transform_v2(cfg, is_train=training)

    def eval_transform(self) -> Transform:
        """Image -> float32 (3, H, W) array, exactly as open_clip's inference transform."""
        return eval_transform(self.preprocess)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> ModelSpec:
        """The spec in a checkpoint's config.json, every field checked before anything is
        built from it (inference/spec_checks.py says which bounds and why).

        Raises ModelLoadError naming the file and the field: a checkpoint may come from
        anyone, and a traceback tells its operator nothing.
        """
        try:
            status = path.stat()
            if not stat.S_ISREG(status.st_mode):  # a FIFO or /dev/zero would never end
                raise ModelLoadError(f"{path} is not a regular file. {REWRITE_ADVICE}")
            if status.st_size > MAX_CONFIG_BYTES:
                raise ModelLoadError(
                    f"{path} is larger than {MAX_CONFIG_BYTES // 2**20} MB, far more than a "
                    f"checkpoint's settings take. {REWRITE_ADVICE}"
                )
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ModelLoadError(f"cannot read {path}: {error.strerror or error}") from None
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deep
            reason = str(error).splitlines()[0][:200] or type(error).__name__
            raise ModelLoadError(f"{path} is not valid JSON ({reason}). {REWRITE_ADVICE}") from None
        version = data.get("format_version", SPEC_FORMAT_VERSION) if isinstance(data, dict) else 1
        if not (isinstance(version, int) and not isinstance(version, bool) and version >= 1):
            raise ModelLoadError(
                f"{path}: format_version must be a whole number from 1, not {repr(version)[:40]}. "
                + REWRITE_ADVICE
            )
        if version > SPEC_FORMAT_VERSION:
            raise ModelLoadError(
                f"{path} has format version {version}; this code reads up to "
                f"{SPEC_FORMAT_VERSION}. Upgrade the hashtag-bot package."
            )
        try:
            check_spec_fields(data)
        except ConfigProblem as problem:
            raise ModelLoadError(f"{path}: {problem}. {REWRITE_ADVICE}") from None
        return cls(**data)


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message says what to do about it."""


def checkpoint_version(directory: Path) -> str:
    """`checkpoint:NAME@DIGEST`, stored with each suggestion the checkpoint makes.

    The digest of config.json (which holds the provenance and thresholds of each run) tells
    apart the heads written one after another into the same directory.
    """
    directory = Path(directory)
    digest = hashlib.sha256((directory / CONFIG_FILE).read_bytes()).hexdigest()[:8]
    return f"checkpoint:{directory.resolve().name}@{digest}"


def zero_shot_version(model: str, pretrained: str) -> str:
    return f"zero-shot:{Path(model).name}:{Path(pretrained).name}"


def default_cache_dir() -> Path:
    """$HASHTAG_CACHE_DIR, else the XDG cache folder (the Docker image points it at /data)."""
    if configured := os.environ.get("HASHTAG_CACHE_DIR"):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hashtag-bot"
