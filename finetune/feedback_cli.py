"""`python -m finetune feedback`: re-fit the served head on the answers stored in the bot's
database (see finetune/feedback.py for what is learned and what is never shared)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.store import Store, StoreUnavailable, default_db_path, is_postgres_url
from bot.store.schema import SchemaTooNew
from finetune.cli import METRIC_COLUMNS, metric_row
from finetune.feedback import FeedbackOptions, NotEnoughAnswers
from finetune.learn import learn_round
from finetune.losses import LOSS_CHOICES
from inference.onnx_backend import ONNX_FILE
from inference.options import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    MODEL_SETUP_ERRORS,
    add_model_arguments,
    check_model_arguments,
    load_torch_model,
)
from inference.spec import checkpoint_version, zero_shot_version

EXIT_WRITTEN, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    defaults = FeedbackOptions()
    parser = argparse.ArgumentParser(
        prog="python -m finetune feedback",
        description="Re-fit the hashtag head on what people answered in the bot, starting from "
        "the head the bot serves (give the same model options). Writes a checkpoint for "
        "`python -m bot --checkpoint OUT` only when it is not worse on the newest answers. "
        "Exit status: 0 written, 1 refused by that check, 2 usage or data errors.",
    )
    parser.add_argument(
        "--db",
        default=default_db_path(),
        help="the bot's database, as `python -m bot --db` takes it: a SQLite file or a "
        "PostgreSQL URL (default: $HASHTAG_DB, else hashtag-bot.sqlite3)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="checkpoint directory to write; an existing one is replaced in place (a running "
        "bot serving it swaps the new head in) and kept as DIR.previous-<time>",
    )
    add_model_arguments(parser, backend=False)
    parser.add_argument(
        "--min-people",
        type=int,
        default=defaults.min_people,
        help="different people who must have used a hashtag outside the vocabulary before it "
        f"is suggested to anyone else (default {defaults.min_people})",
    )
    parser.add_argument(
        "--shown-weight",
        type=float,
        default=defaults.shown_weight,
        help="weight of a shown hashtag that was neither accepted nor rejected, as a "
        f"negative (default {defaults.shown_weight})",
    )
    parser.add_argument("--loss", choices=LOSS_CHOICES, default=defaults.loss)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--force", action="store_true", help="write the checkpoint even if it is worse"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    if args.min_people < 1:
        parser.error("--min-people must be at least 1")
    if not is_postgres_url(args.db) and not Path(args.db).is_file():
        parser.error(f"--db {args.db} does not exist: point it at the bot's database")
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    options = FeedbackOptions(
        min_people=args.min_people,
        shown_weight=args.shown_weight,
        loss=args.loss,
        epochs=args.epochs,
        seed=args.seed,
    )
    try:
        model, device = load_torch_model(args)
        result = asyncio.run(_learn(args, model, options, device))
    except (NotEnoughAnswers, StoreUnavailable, SchemaTooNew, *MODEL_SETUP_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    report = result.report
    print(format_report(report))
    if report["written"]:
        how = "" if result.passed else " (--force: it did worse on the newest answers)"
        print(f"checkpoint written to {args.out}{how}")
        return EXIT_WRITTEN
    print(
        f"not written: the re-fitted head did worse than the current one on the newest answers "
        f"(details in {args.out / 'metrics.json'}; --force writes it anyway)"
    )
    return EXIT_REFUSED


async def _learn(args, model, options, device):
    store = await Store.open(args.db)
    try:
        return await learn_round(
            store,
            model,
            _started_from(args),
            args.out,
            options,
            force=args.force,
            with_onnx=bool(args.checkpoint) and (args.checkpoint / ONNX_FILE).is_file(),
            device=device,
        )
    finally:
        await store.close()


def _started_from(args: argparse.Namespace) -> str:
    if args.checkpoint:
        return checkpoint_version(args.checkpoint)
    return zero_shot_version(args.model or DEFAULT_MODEL, args.pretrained or DEFAULT_PRETRAINED)


def format_report(report: dict) -> str:
    answers = report["answers"]
    community = report["community_hashtags"]
    lines = [
        f"answers: {answers['used']} answered photos from {answers['people']} people "
        f"({answers['train']} train, {answers['validation']} validation, {answers['held_out']} "
        f"newest held out; {answers['skipped_other_encoder']} skipped: made by another encoder)",
        "community hashtags: " + (" ".join(f"#{tag}" for tag in community) or "none"),
        f"blend weight on the re-fitted head: {report['blend']['weight']:.2f}",
        "",
        f"{'newest answers':<24}" + "".join(f"{name:>13}" for name in METRIC_COLUMNS),
    ]
    lines += [metric_row(name, report["held_out"][name]) for name in ("current", "refitted")]
    loss = report["held_out_loss"]
    lines += [
        "",
        f"loss on the newest answers: current {loss['current']:.3f}, re-fitted "
        f"{loss['refitted']:.3f} (lower explains them better; it must not rise)",
        "precision@1 + recall@5 below the current head's, beyond two standard errors: "
        f"{max(0.0, report['ranking_shortfall']):.3f} (must be 0)",
    ]
    return "\n".join(lines)
