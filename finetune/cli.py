"""`python -m finetune`: fine-tune the hashtag model on HARRISON or your own photos."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from finetune.dataset import DatasetError, load_dataset
from finetune.losses import LOSS_CHOICES
from finetune.metrics import PAPER_VGG_OBJECT_SCENE
from finetune.pipeline import RunOptions, run
from finetune.precision import PRECISION_CHOICES
from finetune.training import TrainOptions
from inference.device import resolve_device
from inference.options import MODEL_SETUP_ERRORS, add_model_arguments, check_model_arguments
from inference.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED
from inference.vocab import load_vocabulary

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
METRIC_COLUMNS = ("precision@1", "recall@5", "accuracy@5", "map")


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainOptions()
    parser = argparse.ArgumentParser(
        prog="python -m finetune",
        description="Fine-tune CLIP + the hashtag head. Stage 1 trains the head on cached "
        "embeddings; --unfreeze-blocks adds stage 2 (LP-FT). Writes a checkpoint that "
        "`python -m inference --checkpoint OUT` and the bot load directly. "
        "`python -m finetune export --checkpoint DIR` writes it as ONNX; "
        "`python -m finetune feedback` re-fits the head on what the bot's users answered; "
        "`python -m finetune community` lists the hashtags they brought (and blocks one).",
    )
    parser.add_argument("--data", type=Path, required=True, help="HARRISON folder or manifest")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    add_model_arguments(parser, training=True)
    parser.add_argument("--vocab-size", type=int, default=1000, metavar="K")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="head learning rate")
    parser.add_argument("--encoder-lr", type=float, default=defaults.encoder_lr)
    parser.add_argument(
        "--unfreeze-blocks",
        default="0",
        metavar="N|all",
        help="stage 2: also tune the last N vision blocks, or all (default 0: head only)",
    )
    parser.add_argument("--loss", choices=LOSS_CHOICES, default=defaults.loss)
    parser.add_argument(
        "--test-size",
        type=float,
        metavar="N|FRACTION",
        help="test images: a count, or a fraction below 1 (default: HARRISON's 5,000 of "
        "57,383, in proportion for smaller data); validation is as large, taken from train",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="stop after this many epochs without a better validation precision@1 + recall@5",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--max-images", type=int, metavar="N", help="a seeded subset, for a quick try"
    )
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument(
        "--embedding-precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="stage 1's frozen-encoder pass. auto (default): on a CPU, bf16 where it measures "
        "faster than fp32 on this machine and gives fp32's hashtags, else fp32; on a GPU, "
        "the model's own precision",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --out"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        from finetune.export import main as export_main

        return export_main(argv[1:])
    if argv[:1] == ["feedback"]:
        from finetune.feedback_cli import main as feedback_main

        return feedback_main(argv[1:])
    if argv[:1] == ["community"]:
        from finetune.feedback_cli import community_main

        return community_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    unfreeze = _parse_unfreeze(parser, args.unfreeze_blocks)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    try:
        options = RunOptions(
            data=args.data,
            out=args.out,
            model=args.model or DEFAULT_MODEL,
            pretrained=args.pretrained or DEFAULT_PRETRAINED,
            device=resolve_device(args.device),
            train=TrainOptions(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                encoder_lr=args.encoder_lr,
                loss=args.loss,
                seed=args.seed,
                patience=args.patience,
                workers=args.workers,
            ),
            vocabulary=load_vocabulary(args.vocab) if args.vocab else None,
            vocab_size=args.vocab_size,
            test_size=args.test_size,
            max_images=args.max_images,
            unfreeze_blocks=unfreeze,
            resume=args.resume,
            embedding_precision=args.embedding_precision,
        )
        report = run(load_dataset(args.data), options)
    except KeyboardInterrupt:
        print(
            "\ninterrupted. Cached embeddings and finished epochs are kept: run the same "
            "command with --resume to continue.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except (DatasetError, ValueError, *MODEL_SETUP_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(format_report(report))
    print(
        f"checkpoint written to {args.out} (try: python -m inference --checkpoint {args.out} PHOTO)"
    )
    return EXIT_OK


def _parse_unfreeze(parser: argparse.ArgumentParser, value: str) -> int | None:
    if value == "all":
        return None
    if value.isdigit():
        return int(value)
    parser.error(f"--unfreeze-blocks takes a number or 'all', not {value!r}")


def metric_row(name: str, values: dict[str, float]) -> str:
    """One row of the metrics table, in percent."""
    return f"{name:<24}" + "".join(f"{100 * values[m]:>13.2f}" for m in METRIC_COLUMNS)


def format_report(report: dict) -> str:
    """The metrics table, in percent, with the paper's best baseline for comparison."""
    images = report["images"]
    duplicates = images.get("duplicates_removed", 0)
    lines = [
        f"images: {images['train']} train, {images['val']} validation, {images['test']} test "
        f"({images['missing']} missing, {images['unreadable']} unreadable, "
        + (f"{duplicates} duplicate files left out, " if duplicates else "")
        + f"{images['without_vocabulary_tags']} without a vocabulary hashtag)",
        f"WiSE-FT weight on the fine-tuned model: {report['wise_ft']['weight']:.2f}",
        "",
        f"{'test split':<24}" + "".join(f"{name:>13}" for name in METRIC_COLUMNS),
    ]
    lines += [metric_row(name, report[name]) for name in ("popularity", "zero_shot", "finetuned")]
    paper = PAPER_VGG_OBJECT_SCENE
    lines.append(
        f"{'paper: VGG object+scene':<24}"
        + "".join(f"{paper[m]:>13.2f}" if m in paper else f"{'-':>13}" for m in METRIC_COLUMNS)
    )
    return "\n".join(lines)
