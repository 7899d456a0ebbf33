"""The model options shared by `python -m inference`, `python -m bot` and `python -m finetune`.

One definition keeps `--model`, `--pretrained`, `--checkpoint`, `--vocab` and `--device`
meaning exactly the same thing everywhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from inference.device import DeviceUnavailable, inference_dtype, resolve_device, serving_device
from inference.engine import Servable
from inference.onnx_backend import ONNX_FILE, load_onnx
from inference.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelLoadError
from inference.vocab import VocabularyError, load_vocabulary

if TYPE_CHECKING:
    import torch

    from inference.model import HashtagModel

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
            help="torch; onnx: ONNX Runtime on the CPU with the checkpoint's model.onnx (from "
            "`python -m finetune export`); auto (default): onnx on a CPU when that file exists, "
            "since it is faster there at identical output, else torch",
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
    backend = getattr(args, "backend", "torch")
    if backend == "onnx" and not args.checkpoint:
        parser.error("--backend onnx serves an exported checkpoint: give --checkpoint DIR")
    if getattr(args, "int8", False) and backend != "onnx":
        parser.error("--int8 applies to --backend onnx")


def chosen_backend(args: argparse.Namespace, device: str) -> str:
    """`auto` picks ONNX Runtime on a CPU when the checkpoint has been exported.

    Measured on a 2-core CPU (benchmarks/README.md): ONNX fp32 runs ViT-B-32 1.2-1.6x faster
    than torch at cosine 1.0; int8 is faster still but missed the 0.999 cosine bar there, so it
    stays opt-in (--int8).
    """
    backend = getattr(args, "backend", "torch")
    if backend != "auto":
        return backend
    exported = bool(args.checkpoint) and (Path(args.checkpoint) / ONNX_FILE).is_file()
    return "onnx" if exported and device == "cpu" else "torch"


def load_model_from_args(args: argparse.Namespace) -> tuple[Servable, str]:
    """The model the options describe, on its device, and that device's name.

    Raises one of MODEL_SETUP_ERRORS. The ONNX backend on a CPU never imports torch.
    """
    device = serving_device(args.device)
    if chosen_backend(args, device) == "onnx":
        if device != "cpu":
            raise DeviceUnavailable("--backend onnx runs on the CPU; use --device cpu")
        return load_onnx(args.checkpoint, int8=args.int8), device
    from inference.loading import prepare_for_inference

    model, torch_device = load_torch_model(args)
    return prepare_for_inference(model, torch_device, inference_dtype(torch_device)), device


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
