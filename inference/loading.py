"""The two ways to get a HashtagModel: from open_clip weights (zero-shot) or a checkpoint."""

from __future__ import annotations

import itertools
import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from inference.hub import ensure_downloadable
from inference.memory import release_freed_memory
from inference.model import HashtagModel, build_vision_tower
from inference.prior import DEFAULT_PRIOR_ALPHA, centred_log_prior
from inference.spec import (
    CONFIG_FILE,
    DEFAULT_MODEL,
    WEIGHTS_FILE,
    ModelLoadError,
    ModelSpec,
    default_cache_dir,
)
from inference.zeroshot import build_and_cache_zero_shot_head, cached_zero_shot_head
from inference.zeroshot_cache import zero_shot_key

log = logging.getLogger(__name__)


def resolve_model_name(model: str) -> str:
    """An open_clip model name, or a path to a model-config JSON registered under its stem."""
    if model.endswith(".json") or os.path.sep in model:
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(f"model config file {path} does not exist")
        open_clip.add_model_config(path)
        name = path.stem
    else:
        name = model
    if open_clip.get_model_config(name) is None:
        raise ModelLoadError(
            f"unknown model {model!r}: give an open_clip model name (e.g. {DEFAULT_MODEL}; "
            "see open_clip.list_models()) or the path to a model-config JSON"
        )
    return name


def load_zero_shot(
    model: str,
    pretrained: str,
    vocabulary: Sequence[str],
    cache_dir: Path | None = None,
) -> HashtagModel:
    """Build the model from open_clip weights, with a head from the vocabulary's text embeddings.

    When the weights are a safetensors file in open_clip's own layout, each tower is built on
    its own and takes its tensors straight from the file: the text tower only to build the head
    (once; it is cached) and freed before the vision tower is read. The weights are never held
    twice, as open_clip's loader holds them (the 1.9 GB peak of a ViT-B-32 first start came from
    that; benchmarks/README.md).
    Other weights are loaded whole through open_clip, which converts other layouts, and the
    text tower is dropped after the head.
    """
    name = resolve_model_name(model)
    if tag := open_clip.get_pretrained_cfg(name, pretrained):
        ensure_downloadable(name, pretrained, tag)  # offline and not cached: say so at once
    model_cfg = open_clip.get_model_config(name)
    key = zero_shot_key(model, pretrained, vocabulary)
    cache_dir = cache_dir or default_cache_dir()
    try:
        head, (visual, preprocess) = _head_and_vision(
            name, pretrained, tag, vocabulary, key, cache_dir
        )
    except ModelLoadError:
        raise
    except WEIGHTS_ERRORS as error:  # a damaged file, or a pickle torch refuses to unpickle
        raise ModelLoadError(_pretrained_advice(name, pretrained, error)) from None
    spec = ModelSpec(
        architecture=name,
        model_cfg=model_cfg,
        preprocess=preprocess,
        vocabulary=list(vocabulary),
        provenance={
            "head": "zero-shot",
            "pretrained": pretrained,
            # How much of the popularity prior its biases hold (the learning loop re-fits it).
            "prior_alpha": DEFAULT_PRIOR_ALPHA if centred_log_prior(vocabulary) else None,
        },
    )
    return HashtagModel(visual, head, spec).eval()


def _head_and_vision(
    name: str,
    pretrained: str,
    tag: dict | None,
    vocabulary: Sequence[str],
    key: str,
    cache_dir: Path,
) -> tuple[nn.Linear, tuple[nn.Module, dict]]:
    """The zero-shot head and (vision tower, preprocessing), each tower read on its own when
    the weights allow it (see load_zero_shot)."""
    weights = _safetensors_weights(name, pretrained, tag)
    head = cached_zero_shot_head(key, cache_dir)
    if head is None and weights is not None:
        head = _head_from_text_tower(name, weights, vocabulary, key, cache_dir)
    vision = None
    if head is not None and weights is not None:
        vision = _vision_tower_only(weights, tag, open_clip.get_model_config(name))
    if head is None or vision is None:
        # torch.load inside refuses pickled code (weights_only, the default since torch 2.6)
        clip_model = open_clip.create_model(name, pretrained=pretrained, require_pretrained=True)
        clip_model.eval()
        if head is None:
            head = build_and_cache_zero_shot_head(
                clip_model, open_clip.get_tokenizer(name), vocabulary, key, cache_dir
            )
        vision = clip_model.visual, dict(open_clip.get_model_preprocess_cfg(clip_model))
    return head, vision


def _safetensors_weights(name: str, pretrained: str, tag: dict | None) -> str | None:
    """The weights file, when it is safetensors that can be read tower by tower; None when
    only open_clip's own loader can read it (another format, or no such file)."""
    if tag:
        try:
            path = str(open_clip.download_pretrained(tag))  # the cached file, once downloaded
        except Exception as error:
            raise ModelLoadError(_pretrained_advice(name, pretrained, error)) from None
    elif os.path.isfile(pretrained):
        path = pretrained
    else:
        return None
    return path if path.endswith(".safetensors") else None


def _head_from_text_tower(
    name: str, weights: str, vocabulary: Sequence[str], key: str, cache_dir: Path
) -> nn.Linear | None:
    """Build (and cache) the zero-shot head from the file's text tensors alone, or None when
    the file is in another layout (open_clip's loader converts it).

    The model is made with random weights and its vision tower dropped at once; then each text
    tensor is copied in as it is read, so the file's weights are never held as a second copy.
    """
    with _random_init_warning_muted():
        clip_model = open_clip.create_model(name)
    clip_model.visual = None  # not needed for text, and read separately afterwards
    state = clip_model.state_dict()
    with safe_open(weights, framework="pt") as file, torch.no_grad():
        shapes = {
            tensor_name: tuple(file.get_slice(tensor_name).get_shape())
            for tensor_name in file.keys()  # noqa: SIM118 (safe_open is not iterable)
            if not tensor_name.startswith("visual.")
        }
        if shapes != {tensor_name: tuple(t.shape) for tensor_name, t in state.items()}:
            return None
        for tensor_name in shapes:  # each read is mapped from the file and let go once copied
            state[tensor_name].copy_(file.get_tensor(tensor_name))
    head = build_and_cache_zero_shot_head(
        clip_model.eval(), open_clip.get_tokenizer(name), vocabulary, key, cache_dir
    )
    del clip_model, state
    release_freed_memory()  # the text tower's few hundred MB, before the vision tower is read
    return head


@contextmanager
def _random_init_warning_muted() -> Iterator[None]:
    """open_clip warns that a model made without weights is "initialized randomly"; ours get
    the file's weights right after, so that warning would only mislead."""

    def not_random_init(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(not_random_init)
    try:
        yield
    finally:
        root.removeFilter(not_random_init)


def _vision_tower_only(
    weights: str, tag: dict | None, model_cfg: dict
) -> tuple[nn.Module, dict] | None:
    """(vision tower, preprocessing) read from the weights file without the text tower, or None
    when the file is in another layout (open_clip's loader converts it)."""
    with torch.device("meta"):  # no memory and no random init: the file's tensors become it
        visual = build_vision_tower(model_cfg)
    with safe_open(weights, framework="pt") as file:
        state = {
            key.removeprefix("visual."): file.get_tensor(key)
            for key in file.keys()  # noqa: SIM118 (safe_open is not iterable)
            if key.startswith("visual.")
        }
    try:
        visual.load_state_dict(state, assign=True)
    except RuntimeError:  # another layout or size: open_clip's loader knows how to convert
        return None
    if any(tensor.is_meta for tensor in (*visual.parameters(), *visual.buffers())):
        return None  # a tensor the file does not hold (a computed buffer): build it normally
    # What open_clip.create_model sets: its defaults, the tag's own values, the tower's size.
    preprocess = open_clip.transform.merge_preprocess_dict(
        open_clip.transform.PreprocessCfg(), tag or {}
    )
    preprocess["size"] = visual.image_size
    return visual.eval(), preprocess


def _pretrained_advice(name: str, pretrained: str, error: Exception) -> str:
    tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
    if "download" in str(error).lower():
        return (
            f"could not download the pretrained weights {pretrained!r} for {name}: {error}\n"
            "Check the internet connection, or use weights already on disk: "
            "--pretrained /path/to/open_clip_model.safetensors, or a fine-tuned "
            "--checkpoint DIR."
        )
    if isinstance(error, pickle.UnpicklingError):  # the unpickler stopped before running any
        return (
            f"--pretrained {pretrained!r} was refused, and nothing in it was run: torch's safe "
            f"loader reads only tensors from a pickle ({_unpickler_reason(error)}). Use a "
            ".safetensors file, or one of open_clip's pretrained tags."
        )
    return (
        f"cannot load --pretrained {pretrained!r} for {name}: {one_line(error)}\n"
        f"Give a pretrained tag ({tags}) or a local weights file (.safetensors, .bin, .pt)."
    )


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The line of torch's long weights_only message that says what it met, like
    "Unsupported global: GLOBAL posix.system"."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    pairs = itertools.pairwise(lines)
    after = [line for previous, line in pairs if "WeightsUnpickler" in previous]
    return one_line(after[0] if after else (lines[-1] if lines else error), 120)


def save_checkpoint(model: HashtagModel, directory: Path) -> None:
    """Write config.json + model.safetensors, the layout load_checkpoint reads."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    save_file(state, directory / WEIGHTS_FILE)
    write_config(model, directory)


def write_config(model: HashtagModel, directory: Path) -> None:
    """config.json: the model's spec, with the encoder's fingerprint in the provenance, so the
    ONNX backend (which holds no torch weights to fingerprint) knows it too."""
    model.spec.provenance["encoder"] = model.encoder_id
    (directory / CONFIG_FILE).write_text(model.spec.to_json(), encoding="utf-8")


def load_checkpoint(directory: Path) -> HashtagModel:
    """Load a checkpoint directory. Only safetensors are read: nothing here can run code.

    A checkpoint may come from anyone, so nothing it claims is allocated before it is checked:
    config.json field by field (ModelSpec.from_file), then the model is laid out on the meta
    device (no memory) and its tensor shapes compared with the weights file's header. Memory
    then follows the file, never a size config.json merely states.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelLoadError(
                f"{path} is missing: --checkpoint expects a directory written by "
                "`python -m finetune` (config.json + model.safetensors)"
            )
    spec = ModelSpec.from_file(config_path)  # a ModelLoadError naming the field
    try:
        return _checkpoint_model(spec, weights_path).eval()
    except BUILD_ERRORS as error:
        raise ModelLoadError(
            f"checkpoint {directory} cannot be loaded: {one_line(error)}"
        ) from None


# What torch and safetensors raise on a file they cannot use.
FILE_ERRORS = (
    AttributeError, KeyError, OSError, RuntimeError, SafetensorError, TypeError, ValueError
)  # fmt: skip
# Building from a checkpoint's config: open_clip also asserts on values it does not know.
BUILD_ERRORS = (AssertionError, *FILE_ERRORS)
# Weights read with torch.load: a refused pickle, a cut file, an empty dict.
WEIGHTS_ERRORS = (*FILE_ERRORS, pickle.UnpicklingError, EOFError, StopIteration)


def _checkpoint_model(spec: ModelSpec, weights_path: Path) -> HashtagModel:
    """The model config.json describes, holding the file's tensors once they are known to fit."""

    def build() -> HashtagModel:
        visual = build_vision_tower(spec.model_cfg)
        head = nn.Linear(spec.model_cfg["embed_dim"], len(spec.vocabulary))
        return HashtagModel(visual, head, spec)

    with torch.device("meta"):
        model = build()
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with safe_open(str(weights_path), framework="pt") as file:
        found = {
            name: tuple(file.get_slice(name).get_shape())
            for name in file.keys()  # noqa: SIM118 (safe_open is not iterable)
        }
    if found != expected:
        raise ValueError(
            f"{weights_path.name} does not match config.json: {_mismatch(expected, found)}"
        )
    state = load_file(weights_path)
    model.load_state_dict(state, assign=True)
    if any(tensor.is_meta for tensor in (*model.parameters(), *model.buffers())):
        # A buffer computed when built, not stored: build it for real. The file matched the
        # model's shapes, so this takes what the file's size announced.
        model = build()
        model.load_state_dict(state)
    return model.float()  # as a model built in float32 would hold a float16 file's tensors


def _mismatch(expected: dict[str, tuple], found: dict[str, tuple]) -> str:
    """The first difference between the tensors the config implies and those in the file."""
    if missing := sorted(expected.keys() - found.keys()):
        return f"it lacks {missing[0]} ({len(missing)} tensors missing)"
    if extra := sorted(found.keys() - expected.keys()):
        return f"it holds {extra[0]}, which the model has no place for"
    name = next(name for name in sorted(expected) if expected[name] != found[name])
    return f"{name} is {list(found[name])} in the file, {list(expected[name])} by config.json"


def one_line(error: BaseException, longest: int = 300) -> str:
    """An exception's message on one line, cut: some libraries explain over many lines."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= longest else text[: longest - 3] + "..."


def prepare_for_inference(
    model: HashtagModel, device: torch.device, dtype: torch.dtype
) -> HashtagModel:
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
