"""What a checkpoint's config.json may hold, checked before anything is built from it.

A checkpoint is a file someone handed over; its config.json decides how much memory each photo
takes (`preprocess.size`), how big a model is built, and whether open_clip asks timm for a
model from the Hugging Face Hub. So every field is checked against what real open_clip models
use, with headroom, and anything else is refused with the field's name. Like spec.py, this
imports no torch: the ONNX backend checks the same file.

The bounds, and why:
- image sides 16 to 1024 pixels: open_clip's largest input is 512 (SigLIP2 at 512), the tiny
  test model's 32. A side of 1024 is 12 MB of float32 per photo; 30000 was 10.8 GB.
- at most 4096 patches per image: attention memory grows with its square; open_clip's models
  stay at or under 1369 (ViT-H-14 at 518 pixels).
- mean within 0..1 (it is a mean of pixel values on that scale), std from 0.001 to 1 (open_clip
  ships 0.229 to 1.0).
- tower widths and embed_dim up to 8192, 1 to 128 layers: open_clip's largest are 1792 wide,
  56 layers deep, 1536-d embeddings (ViT-e-14, gopt SigLIP2).
- up to 100,000 hashtags of 1 to 200 characters (HARRISON has 997; the bot keeps typed ones
  to 64 characters); thresholds are sigmoid scores, so 0 to 1, one per hashtag.
"""

from __future__ import annotations

import re
from typing import Any

MIN_SIDE, MAX_SIDE = 16, 1024
MAX_PATCHES = 4096
MAX_WIDTH, MAX_LAYERS, MAX_HEADS = 8192, 128, 256
MAX_HASHTAGS, MAX_HASHTAG_CHARS = 100_000, 200
MIN_STD = 0.001

SPEC_FIELDS = {"architecture", "model_cfg", "preprocess", "vocabulary"}  # required
OPTIONAL_SPEC_FIELDS = {"thresholds", "provenance", "format_version"}
INTERPOLATIONS = ("bicubic", "bilinear", "random")  # open_clip's; eval reads random as bicubic
RESIZE_MODES = ("shortest", "longest", "squash")
# A timm registry name, like `vit_base_patch16_siglip_224.webli`. A source prefix
# (`hf-hub:org/name`, `local-dir:/path`) or a path would make timm read it from elsewhere.
TIMM_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


class ConfigProblem(ValueError):
    """One field of config.json that cannot be used; `field` is its dotted name."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field


def check_spec_fields(data: Any) -> None:
    """Raise ConfigProblem for the first field of a config.json object that is out of bounds."""
    if not isinstance(data, dict):
        raise ConfigProblem("the file", "must hold a JSON object")
    if missing := sorted(SPEC_FIELDS - data.keys()):
        raise ConfigProblem(missing[0], "is missing")
    if unknown := sorted(data.keys() - SPEC_FIELDS - OPTIONAL_SPEC_FIELDS):
        raise ConfigProblem(unknown[0], "is not a field of a checkpoint's config.json")
    _text("architecture", data["architecture"], 200)
    if not isinstance(data.get("provenance", {}), dict):
        raise ConfigProblem("provenance", "must be an object")
    if "encoder" in data.get("provenance", {}):
        _text("provenance.encoder", data["provenance"]["encoder"], 100)
    check_preprocess(data["preprocess"])
    check_model_cfg(data["model_cfg"])
    _check_vocabulary(data["vocabulary"], data.get("thresholds"))


def check_preprocess(preprocess: Any) -> None:
    """The fields eval_transform() and open_clip's transform read."""
    if not isinstance(preprocess, dict):
        raise ConfigProblem("preprocess", "must be an object")
    if "size" not in preprocess:
        raise ConfigProblem("preprocess.size", "is missing")
    _side_or_pair("preprocess.size", preprocess["size"])
    if preprocess.get("mode", "RGB") != "RGB":
        raise ConfigProblem("preprocess.mode", f"must be 'RGB', not {preprocess['mode']!r}")
    for name, low, high in (("mean", 0.0, 1.0), ("std", MIN_STD, 1.0)):
        value = preprocess.get(name)
        if value is None:  # open_clip's OpenAI defaults
            continue
        if not (isinstance(value, list) and len(value) == 3):
            raise ConfigProblem(f"preprocess.{name}", f"must be three numbers, not {value!r}")
        for number in value:
            _number(f"preprocess.{name}", number, low, high)
    _choice("preprocess.interpolation", preprocess.get("interpolation"), INTERPOLATIONS)
    _choice("preprocess.resize_mode", preprocess.get("resize_mode"), RESIZE_MODES)
    if "fill_color" in preprocess:
        _integer("preprocess.fill_color", preprocess["fill_color"], 0, 255)


def check_model_cfg(model_cfg: Any) -> None:
    """What build_vision_tower() reads; the text tower is never built from a checkpoint."""
    if not isinstance(model_cfg, dict):
        raise ConfigProblem("model_cfg", "must be an object")
    _integer("model_cfg.embed_dim", model_cfg.get("embed_dim"), 1, MAX_WIDTH)
    if not isinstance(model_cfg.get("quick_gelu", False), bool):
        raise ConfigProblem("model_cfg.quick_gelu", "must be true or false")
    vision = model_cfg.get("vision_cfg")
    if not isinstance(vision, dict):
        raise ConfigProblem("model_cfg.vision_cfg", "must be an object")
    field = "model_cfg.vision_cfg."
    if "timm_model_name" in vision and vision["timm_model_name"] is not None:
        name = vision["timm_model_name"]
        if not (isinstance(name, str) and TIMM_NAME.fullmatch(name)):
            raise ConfigProblem(
                field + "timm_model_name",
                f"must be a timm model name (like vit_base_patch16_siglip_224), not {name!r}: "
                "a checkpoint is never fetched from the Hugging Face Hub or another folder",
            )
    if vision.get("timm_model_pretrained", False) is not False:
        raise ConfigProblem(
            field + "timm_model_pretrained",
            "must be false: a checkpoint carries its own weights, none are downloaded",
        )
    side = max(_side_or_pair(field + "image_size", vision.get("image_size", 224)))
    layers = vision.get("layers", 12)
    if isinstance(layers, list):  # a ModifiedResNet's four stages
        if len(layers) != 4:
            raise ConfigProblem(field + "layers", f"must be one number or four, not {layers!r}")
        for stage in layers:
            _integer(field + "layers", stage, 1, MAX_LAYERS)
    else:
        _integer(field + "layers", layers, 1, MAX_LAYERS)
    width = _integer(field + "width", vision.get("width", 768), 1, MAX_WIDTH)
    _integer(field + "head_width", vision.get("head_width", 64), 1, width)
    patch = _integer(field + "patch_size", vision.get("patch_size", 16), 1, side)
    if (side // patch) ** 2 > MAX_PATCHES:
        raise ConfigProblem(
            field + "patch_size",
            f"{patch} cuts a {side}-pixel side into more than {MAX_PATCHES} patches",
        )
    _number(field + "mlp_ratio", vision.get("mlp_ratio", 4.0), 0.25, 16.0)
    _number(field + "patch_dropout", vision.get("patch_dropout", 0.0), 0.0, 0.99)
    _integer(field + "attn_pooler_queries", vision.get("attn_pooler_queries", 256), 1, 4096)
    _integer(field + "attn_pooler_heads", vision.get("attn_pooler_heads", 8), 1, MAX_HEADS)


def _check_vocabulary(vocabulary: Any, thresholds: Any) -> None:
    if not (isinstance(vocabulary, list) and 1 <= len(vocabulary) <= MAX_HASHTAGS):
        raise ConfigProblem("vocabulary", f"must be a list of 1 to {MAX_HASHTAGS} hashtags")
    for index, tag in enumerate(vocabulary):
        if not (isinstance(tag, str) and 1 <= len(tag) <= MAX_HASHTAG_CHARS):
            raise ConfigProblem(
                f"vocabulary[{index}]",
                f"must be a hashtag of 1 to {MAX_HASHTAG_CHARS} characters, not {_short(tag)}",
            )
    if thresholds is None:
        return
    if not (isinstance(thresholds, list) and len(thresholds) == len(vocabulary)):
        raise ConfigProblem("thresholds", "must be null or one number per hashtag")
    for index, threshold in enumerate(thresholds):
        _number(f"thresholds[{index}]", threshold, 0.0, 1.0)


def _side_or_pair(field: str, value: Any) -> tuple[int, int]:
    """An image size: one side, or [height, width]."""
    if isinstance(value, list) and len(value) == 2:
        return (
            _integer(field, value[0], MIN_SIDE, MAX_SIDE),
            _integer(field, value[1], MIN_SIDE, MAX_SIDE),
        )
    if isinstance(value, list):
        raise ConfigProblem(field, f"must be one side or [height, width], not {_short(value)}")
    side = _integer(field, value, MIN_SIDE, MAX_SIDE)
    return side, side


def _integer(field: str, value: Any, low: int, high: int) -> int:
    # bool is an int to Python, and `true` is no size.
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        problem = f"must be a whole number from {low} to {high}, not {_short(value)}"
        raise ConfigProblem(field, problem)
    return value


def _number(field: str, value: Any, low: float, high: float) -> float:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not (numeric and low <= value <= high):  # NaN compares false, infinity is past `high`
        problem = f"must be a number from {low:g} to {high:g}, not {_short(value)}"
        raise ConfigProblem(field, problem)
    return float(value)


def _choice(field: str, value: Any, known: tuple[str, ...]) -> None:
    if value is not None and value not in known:
        raise ConfigProblem(field, f"must be one of {', '.join(known)}, not {_short(value)}")


def _text(field: str, value: Any, longest: int) -> None:
    if not (isinstance(value, str) and 0 < len(value) <= longest):
        raise ConfigProblem(field, f"must be a text of 1 to {longest} characters")


def _short(value: Any) -> str:
    """A value as JSON would show it, cut so that a hostile file cannot flood the message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
