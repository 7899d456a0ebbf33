"""The model options shared by `python -m inference`, `python -m bot` and `python -m finetune`.

One definition keeps `--model`, `--pretrained`, `--checkpoint`, `--vocab` and `--device`
meaning exactly the same thing everywhere. Each option has an environment equivalent,
$HASHTAG_<OPTION> ($HASHTAG_MODEL, ...), read when a command builds its parser; a flag wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from inference.backends.choice import ENGINES, load_engine
from inference.backends.exported import ONNX_FILE
from inference.children import child_environment
from inference.device import DeviceUnavailable, inference_dtype, resolve_device, serving_device
from inference.engine import Servable
from inference.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelLoadError, default_cache_dir
from inference.vocab import VocabularyError, load_vocabulary
from inference.zeroshot_cache import export_dir, zero_shot_key

if TYPE_CHECKING:
    import torch

    from inference.model import HashtagModel

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", *ENGINES)

# Everything that can go wrong while loading, each with a message that says what to do.
MODEL_SETUP_ERRORS = (ModelLoadError, VocabularyError, DeviceUnavailable)

# How `python -m inference.first_start` ends when it cannot export the zero-shot model.
EXIT_SETUP_FAILED, EXIT_EXPORT_FAILED = 2, 3
# Its peak on ViT-B-32 (benchmarks/README.md), for the advice when it is killed.
FIRST_START_MEMORY = "1.4 GB"

# Every model option's variable. Child processes that get the model as flags go without them:
# $HASHTAG_MODEL beside a `--checkpoint` flag would be a contradiction.
MODEL_VARIABLES = tuple(
    f"HASHTAG_{name}"
    for name in ("CHECKPOINT", "MODEL", "PRETRAINED", "VOCAB", "DEVICE", "BACKEND", "INT8")
)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _variable(option: str, default: str | None = None) -> str | None:
    """$HASHTAG_<OPTION> as the option's default, read now (when the parser is built, so a
    test or a wrapper can set it after import). Empty counts as unset. argparse applies the
    option's `type` to a string default, so it is checked like the flag."""
    value = os.environ.get(f"HASHTAG_{option.upper()}", "").strip()
    return value or default


def _switch(option: str) -> bool | str:
    """$HASHTAG_<OPTION> for an on/off flag; an unknown value is returned as it is, for
    check_model_arguments to refuse with a message."""
    value = os.environ.get(f"HASHTAG_{option.upper()}", "").strip()
    if value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    return value


def without_model_variables(environment: dict[str, str]) -> dict[str, str]:
    """A child process's environment when its command line names the model."""
    return {name: value for name, value in environment.items() if name not in MODEL_VARIABLES}


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
            default=_variable("checkpoint"),
            metavar="DIR",
            help="a fine-tuned checkpoint directory written by `python -m finetune` "
            "($HASHTAG_CHECKPOINT)",
        )
    group.add_argument(
        "--model",
        default=_variable("model"),
        metavar="M",
        help="open_clip model name or path to a model-config JSON "
        f"(default {DEFAULT_MODEL}; $HASHTAG_MODEL)",
    )
    group.add_argument(
        "--pretrained",
        default=_variable("pretrained"),
        metavar="P",
        help="open_clip pretrained tag or local weights file (.safetensors/.bin/.pt; default "
        f"{DEFAULT_PRETRAINED} with the default model; $HASHTAG_PRETRAINED)",
    )
    group.add_argument(
        "--vocab",
        type=Path,
        default=_variable("vocab"),
        metavar="FILE",
        help="hashtags, one per line (default: "
        + (
            "the data's vocab_index.txt, else its most frequent hashtags"
            if training
            else "HARRISON's 997; zero-shot models only"
        )
        + "; $HASHTAG_VOCAB)",
    )
    group.add_argument(
        "--device",
        default=_variable("device", "auto"),
        metavar="D",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default auto; $HASHTAG_DEVICE)",
    )
    if backend and not training:
        group.add_argument(
            "--backend",
            choices=BACKENDS,  # argparse checks flags against these, not defaults: see below
            default=_variable("backend", "auto"),
            help="auto (default): on a CPU, the fastest engine that gives fp32's hashtags here, "
            "measured once per CPU on the export (the zero-shot model is exported into the cache "
            "on its first start; a checkpoint once `python -m finetune export` has run), else "
            "torch; torch: the model itself (fp16 on a GPU); onnx, onnx-int8: ONNX Runtime fp32 "
            "or int8; openvino, openvino-bf16: OpenVINO f32 or bf16 ($HASHTAG_BACKEND)",
        )
        group.add_argument(
            "--int8",
            action="store_true",
            default=_switch("int8"),
            help="with --backend onnx: the same as --backend onnx-int8 ($HASHTAG_INT8=1)",
        )


def check_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradictory combinations and bad variables up front, as usage errors (exit
    status 2); the messages name the variables too, since a value may have come from one."""
    if getattr(args, "checkpoint", None) and (args.model or args.pretrained or args.vocab):
        parser.error(
            "--checkpoint ($HASHTAG_CHECKPOINT) carries its own model, weights and vocabulary; "
            "drop --model/--pretrained/--vocab ($HASHTAG_MODEL/_PRETRAINED/_VOCAB)"
        )
    if args.model and not args.pretrained:
        parser.error(
            f"--model {args.model} needs --pretrained (a tag or a weights file; "
            "$HASHTAG_PRETRAINED)"
        )
    if getattr(args, "backend", "auto") not in BACKENDS:
        parser.error(f"$HASHTAG_BACKEND must be one of {', '.join(BACKENDS)}, not {args.backend}")
    if isinstance(getattr(args, "int8", False), str):
        parser.error(f"$HASHTAG_INT8 must be 1 or 0 (true/false, yes/no), not {args.int8!r}")
    if getattr(args, "int8", False) and getattr(args, "backend", "torch") != "onnx":
        parser.error("--int8 applies to --backend onnx")


def chosen_backend(args: argparse.Namespace, device: str) -> str:
    """`torch`, an engine's name, or `auto`: an export on a CPU, served by the engine measured
    fastest on this CPU among those that agree with fp32 (inference/backends/choice.py).

    An export serves on a CPU whenever there is one: the zero-shot model always has one (its
    first start makes it), a checkpoint once `python -m finetune export` has run. It never
    imports torch, so it needs less than half the memory.
    """
    backend = getattr(args, "backend", "torch")
    if backend == "onnx" and getattr(args, "int8", False):
        return "onnx-int8"
    if backend != "auto":
        return backend
    if device != "cpu":
        return "torch"
    if args.checkpoint and not (Path(args.checkpoint) / ONNX_FILE).is_file():
        return "torch"
    return "auto"


def load_model_from_args(args: argparse.Namespace) -> tuple[Servable, str]:
    """The model the options describe, on its device, and that device's name.

    Raises one of MODEL_SETUP_ERRORS. An export on a CPU never imports torch: the zero-shot
    model's first start exports it in a child process, and the engine is chosen in another.
    """
    device = serving_device(args.device)
    backend = chosen_backend(args, device)
    if backend != "torch" and device != "cpu":
        raise DeviceUnavailable(f"--backend {backend} runs on the CPU; use --device cpu")
    if backend != "torch" and args.checkpoint:
        return load_engine(args.checkpoint, backend), device
    if backend != "torch":
        exported = zero_shot_export_dir(args)
        if (earlier := _earlier_export(exported, backend)) is not None:
            return earlier, device
        if _export_zero_shot(exported, args):
            return load_engine(exported, backend), device
    from inference.loading import prepare_for_inference

    model, torch_device = load_torch_model(args)
    return prepare_for_inference(model, torch_device, inference_dtype(torch_device)), device


def zero_shot_export_dir(args: argparse.Namespace) -> Path:
    """Where the zero-shot model the options name is exported for ONNX Runtime."""
    vocabulary = load_vocabulary(args.vocab)
    model, pretrained = args.model or DEFAULT_MODEL, args.pretrained or DEFAULT_PRETRAINED
    return export_dir(zero_shot_key(model, pretrained, vocabulary), default_cache_dir())


def _earlier_export(directory: Path, backend: str) -> Servable | None:
    """The zero-shot model as an earlier start exported it; None when there is none yet, or
    when it is damaged, which is then exported again, like a damaged cached head."""
    if not (directory / ONNX_FILE).is_file():
        return None
    try:
        return load_engine(directory, backend)
    except ModelLoadError as error:
        log.warning("exporting the zero-shot model again: the cached export is damaged (%s)", error)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def _export_zero_shot(directory: Path, args: argparse.Namespace) -> bool:
    """The zero-shot model's first start on a CPU: `python -m inference.first_start`, a child
    process, builds the head and exports the model (once) for ONNX Runtime to serve. Its
    torch and exporter memory leave with it, so this process stays as lean as on later starts.

    False when only the exporter failed and `auto` may fall back to torch. Raises
    ModelLoadError when the model cannot be loaded at all, or the child was killed (the
    kernel's out-of-memory killer, most likely).
    """
    options = ["--device", "cpu"]
    for flag, value in (("--model", args.model), ("--pretrained", args.pretrained)):
        options += [flag, value] if value else []
    options += ["--vocab", str(args.vocab)] if args.vocab else []
    env = without_model_variables(child_environment())  # the options above name the model
    with tempfile.TemporaryDirectory(prefix="hashtag-first-start-") as temp:
        report = Path(temp) / "report.txt"
        command = [sys.executable, "-m", "inference.first_start", "--report", str(report)]
        status = subprocess.run(
            [*command, *options, str(directory)], env=env, check=False
        ).returncode
        reason = report.read_text(encoding="utf-8") if report.is_file() else ""
    if status == 0:
        return True
    if status == EXIT_SETUP_FAILED:
        raise ModelLoadError(reason)
    if status < 0:
        raise ModelLoadError(
            f"the first start's export was stopped by signal {-status}. Building the head and "
            f"exporting the model needs about {FIRST_START_MEMORY} of memory, once (later "
            "starts need less than half): give it more memory for its first start, or serve "
            "with --backend torch."
        )
    reason = reason or f"it ended with exit status {status}; its error is printed above"
    if args.backend != "auto":
        raise ModelLoadError(
            f"cannot export the zero-shot model for ONNX Runtime: {reason}\nUse --backend torch."
        )
    log.warning(
        "could not export the zero-shot model for ONNX Runtime (%s); serving it with "
        "torch. --backend torch skips this attempt.",
        reason,
    )
    return False


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
