"""How the bot's settings become the model it serves and the commands it runs: which
checkpoint to serve and watch, how a replaced one is loaded, and what the learner is told.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bot.operations.checkpoints import CheckpointLoader, checkpoint_stamp
from inference.backends.exported import ExportedModel
from inference.engine import Servable
from inference.options import (
    load_model_from_args,
)
from inference.spec import (
    CONFIG_FILE,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    ModelLoadError,
    ModelSpec,
    checkpoint_version,
    zero_shot_version,
)

log = logging.getLogger("bot")


def served_checkpoint(args: argparse.Namespace) -> Path | None:
    """The checkpoint directory to serve and watch for replacements, if any.

    With --learn-every that is the learned head's directory, served once it exists, as long as
    it was learned on top of the model the options name; otherwise the model the options name.
    """
    if not args.learn_every:
        return args.checkpoint
    learned = args.learned_checkpoint or Path(args.db).resolve().parent / "learned-model"
    if checkpoint_stamp(learned):
        try:
            base = ModelSpec.from_file(learned / CONFIG_FILE).provenance.get("base")
        except (OSError, ValueError, TypeError) as error:
            base = f"unreadable ({error})"
        if base != base_version(args):
            raise ModelLoadError(
                f"{learned} holds a head learned on top of {base}, not {base_version(args)}: "
                "move it away to start learning afresh from this model, or give "
                "--learned-checkpoint another directory"
            )
        log.info("serving the learned head in %s (learned on top of %s)", learned, base)
    return learned


def checkpoint_loader(args: argparse.Namespace) -> CheckpointLoader:
    def load(directory: Path) -> tuple[Servable, str]:
        served = argparse.Namespace(**{**vars(args), "checkpoint": directory})
        model, _ = load_model_from_args(served)
        return model, checkpoint_version(directory) + backend_mark(model, args)

    return load


def backend_mark(model: Servable, args: argparse.Namespace) -> str:
    """What a suggestion's model version adds for an engine serving an export (":onnx",
    ":openvino-bf16"): bf16 and int8 scores differ a little, so quality is counted apart."""
    if not isinstance(model, ExportedModel):
        return ""
    return f":{model.engine}"


def base_version(args: argparse.Namespace) -> str:
    """The model the options name, before any learning."""
    if args.checkpoint:
        return checkpoint_version(args.checkpoint)
    return zero_shot_version(args.model or DEFAULT_MODEL, args.pretrained or DEFAULT_PRETRAINED)


def model_options(args: argparse.Namespace) -> list[str]:
    """The options that name the base model, for `python -m finetune feedback`."""
    if args.checkpoint:
        named = ["--checkpoint", str(args.checkpoint)]
    else:
        named = ["--model", args.model or DEFAULT_MODEL]
        named += ["--pretrained", args.pretrained or DEFAULT_PRETRAINED]
        named += ["--vocab", str(args.vocab)] if args.vocab else []
    return [*named, "--device", args.device]


def sharing_options(args: argparse.Namespace) -> list[str]:
    shared = ["--min-people", str(args.min_people), "--min-days", str(args.min_days)]
    if args.blocked_hashtags:
        shared += ["--blocked-hashtags", str(args.blocked_hashtags)]
    return shared
