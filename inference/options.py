"""The model options shared by `python -m inference`, `python -m bot` and `python -m finetune`.

One definition keeps `--model`, `--pretrained`, `--checkpoint`, `--vocab` and `--device`
meaning exactly the same thing everywhere.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from inference.device import DeviceUnavailable, inference_dtype, resolve_device, serving_device
from inference.engine import Servable
from inference.onnx_backend import ONNX_FILE, load_onnx
from inference.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelLoadError, default_cache_dir
from inference.vocab import VocabularyError, load_vocabulary
from inference.zeroshot_cache import export_dir, zero_shot_key

if TYPE_CHECKING:
    import torch

    from inference.model import HashtagModel

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")

# Everything that can go wrong while loading, each with a message that says what to do.
MODEL_SETUP_ERRORS = (ModelLoadError, VocabularyError, DeviceUnavailable)


def add_model_arguments(
    parser: argparse.ArgumentParser, *, training: bool = False, backend: bool = True
) -> None:
    """The model options; `training` leaves out --checkpoint (fine-tuning starts from weights)
    and --backend; `backend=False` leaves out only --backend (for commands that train)."""
    group = parser.add_argument_group("model")
    if not training:
        group.add_argument(
            "--checkpoint",
            type=Path,
            metavar="DIR",
            help="a fine-tuned checkpoint directory written by `python -m finetune`",
        )
    group.add_argument(
        "--model",
        metavar="M",
        help=f"open_clip model name or path to a model-config JSON (default {DEFAULT_MODEL})",
    )
    group.add_argument(
        "--pretrained",
        metavar="P",
        help="open_clip pretrained tag or local weights file "
        f"(.safetensors/.bin/.pt; default {DEFAULT_PRETRAINED} with the default model)",
    )
    group.add_argument(
        "--vocab",
        type=Path,
        metavar="FILE",
        help="hashtags, one per line (default: "
        + (
            "the data's vocab_index.txt, else its most frequent hashtags)"
            if training
            else "HARRISON's 997; zero-shot models only)"
        ),
    )
    group.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)",
    )
    if backend and not training:
        group.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="torch; onnx: ONNX Runtime on the CPU, with the checkpoint's model.onnx (from "
            "`python -m finetune export`) or the zero-shot model's (exported into the cache on "
            "its first start); auto (default): onnx on a CPU for the zero-shot model and for "
            "exported checkpoints (same output in less than half the memory), else torch",
        )
        group.add_argument(
            "--int8", action="store_true", help="with --backend onnx: int8 dynamic quantisation"
        )


def check_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradictory combinations up front, as usage errors (exit status 2)."""
    if getattr(args, "checkpoint", None) and (args.model or args.pretrained or args.vocab):
        parser.error(
            "--checkpoint carries its own model, weights and vocabulary; "
            "drop --model/--pretrained/--vocab"
        )
    if args.model and not args.pretrained:
        parser.error(f"--model {args.model} needs --pretrained (a tag or a weights file)")
    if getattr(args, "int8", False) and getattr(args, "backend", "torch") != "onnx":
        parser.error("--int8 applies to --backend onnx")


def chosen_backend(args: argparse.Namespace, device: str) -> str:
    """`auto` picks ONNX Runtime on a CPU: for the zero-shot model always (its first start
    exports it into the cache), for a checkpoint once `python -m finetune export` has run.

    Measured on a 2-core CPU (benchmarks/README.md): the same hashtags (cosine 1.0) in less
    than half the memory, since torch is never imported; faster for single photos, slightly
    slower in batches of 32. int8 is faster still but stays opt-in (--int8) until it is
    measured with the real weights.
    """
    backend = getattr(args, "backend", "torch")
    if backend != "auto":
        return backend
    if device != "cpu":
        return "torch"
    if args.checkpoint:
        return "onnx" if (Path(args.checkpoint) / ONNX_FILE).is_file() else "torch"
    return "onnx"


def load_model_from_args(args: argparse.Namespace) -> tuple[Servable, str]:
    """The model the options describe, on its device, and that device's name.

    Raises one of MODEL_SETUP_ERRORS. The ONNX backend on a CPU never imports torch, except on
    the zero-shot model's first start, which exports it.
    """
    device = serving_device(args.device)
    backend = chosen_backend(args, device)
    if backend == "onnx" and device != "cpu":
        raise DeviceUnavailable("--backend onnx runs on the CPU; use --device cpu")
    if backend == "onnx" and args.checkpoint:
        return load_onnx(args.checkpoint, int8=args.int8), device
    if backend == "onnx":
        exported = zero_shot_export_dir(args)
        if (earlier := _earlier_export(exported, args)) is not None:
            return earlier, device
    from inference.loading import prepare_for_inference

    model, torch_device = load_torch_model(args)
    if backend == "onnx":
        served = _export_zero_shot(model, exported, args)
        if served is not None:
            return served, device
    return prepare_for_inference(model, torch_device, inference_dtype(torch_device)), device


def zero_shot_export_dir(args: argparse.Namespace) -> Path:
    """Where the zero-shot model the options name is exported for ONNX Runtime."""
    vocabulary = load_vocabulary(args.vocab)
    model, pretrained = args.model or DEFAULT_MODEL, args.pretrained or DEFAULT_PRETRAINED
    return export_dir(zero_shot_key(model, pretrained, vocabulary), default_cache_dir())


def _earlier_export(directory: Path, args: argparse.Namespace) -> Servable | None:
    """The zero-shot model as an earlier start exported it; None when there is none yet, or
    when it is damaged, which is then exported again, like a damaged cached head."""
    if not (directory / ONNX_FILE).is_file():
        return None
    try:
        return load_onnx(directory, int8=args.int8)
    except ModelLoadError as error:
        log.warning("exporting the zero-shot model again: the cached export is damaged (%s)", error)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def _export_zero_shot(
    model: HashtagModel, directory: Path, args: argparse.Namespace
) -> Servable | None:
    """The zero-shot model's first start on a CPU: export it (once), then serve the export.
    None when it cannot be exported and `auto` may fall back to torch."""
    from inference.onnx_export import export_for_serving

    log.info("exporting the zero-shot model for ONNX Runtime, once, into %s", directory)
    try:
        export_for_serving(model, directory)
    except Exception as error:  # an exporter failure of any kind: torch still serves
        if args.backend == "onnx":
            raise ModelLoadError(
                f"cannot export the zero-shot model for ONNX Runtime: {error}\nUse --backend torch."
            ) from None
        log.warning(
            "could not export the zero-shot model for ONNX Runtime (%s); serving it with "
            "torch. --backend torch skips this attempt.",
            error,
        )
        return None
    return load_onnx(directory, int8=args.int8)


def load_torch_model(args: argparse.Namespace) -> tuple[HashtagModel, torch.device]:
    """The torch model the options describe, float32 on the CPU, and the device they name."""
    from inference.loading import load_checkpoint, load_zero_shot

    device = resolve_device(args.device)
    if getattr(args, "checkpoint", None):
        return load_checkpoint(args.checkpoint), device
    model = load_zero_shot(
        args.model or DEFAULT_MODEL,
        args.pretrained or DEFAULT_PRETRAINED,
        load_vocabulary(args.vocab),
    )
    return model, device
