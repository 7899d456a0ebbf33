"""`python -m finetune feedback`: re-fit the hashtag head on the answers stored in the bot's
database, on top of the base model (see finetune/feedback.py for what is learned and what is
never shared); `python -m finetune community`: the hashtags people brought, and the veto."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.core.blocklist import (
    BlockList,
    BlockListError,
    add_to_block_list,
    configured_block_list_path,
)
from bot.store import Store, StoreUnavailable, default_db_path, is_postgres_url
from bot.store.records import AnsweredPhotos
from bot.store.schema import SchemaTooNew
from finetune.answers import TRAIN, established_people, people_per_hashtag, split_of
from finetune.base_model import base_of, is_learned, learned_from
from finetune.cli import METRIC_COLUMNS, metric_row
from finetune.feedback import FeedbackOptions, NotEnoughAnswers
from finetune.learn import Models, learn_round, read_answers
from finetune.losses import LOSS_CHOICES
from inference.backends.exported import ONNX_FILE
from inference.options import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    MODEL_SETUP_ERRORS,
    add_model_arguments,
    check_model_arguments,
    load_torch_model,
)
from inference.spec import (
    CONFIG_FILE,
    ModelLoadError,
    ModelSpec,
    checkpoint_version,
    zero_shot_version,
)
from inference.vocab import load_vocabulary

EXIT_WRITTEN, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
DAMAGED_SHOWN = 5  # damaged rows named on stderr; the rest are counted


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=default_db_path(),
        help="the bot's database, as `python -m bot --db` takes it: a SQLite file or a "
        "PostgreSQL URL (default: $HASHTAG_DB, else hashtag-bot.sqlite3)",
    )


def add_sharing_arguments(parser: argparse.ArgumentParser) -> None:
    """Who counts towards sharing a hashtag, and the veto: the same for the bot's --learn-every."""
    defaults = FeedbackOptions()
    parser.add_argument(
        "--min-people",
        type=int,
        default=defaults.min_people,
        help="different people who must have accepted a hashtag before the shared head learns "
        f"it, or suggests a new one to anyone else (default {defaults.min_people})",
    )
    parser.add_argument(
        "--min-days",
        type=int,
        default=defaults.min_days,
        help="days (UTC) on which a person must have answered before they count towards "
        f"--min-people (default {defaults.min_days})",
    )
    parser.add_argument(
        "--blocked-hashtags",
        type=Path,
        metavar="FILE",
        help="hashtags never shared or suggested, one per line (default: "
        "$HASHTAG_BLOCKED_HASHTAGS, else the list that ships with the bot)",
    )


def check_sharing_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.min_people < 1:
        parser.error("--min-people must be at least 1 (1 shares anything anyone typed)")
    if args.min_days < 1:
        parser.error("--min-days must be at least 1")


def build_parser() -> argparse.ArgumentParser:
    defaults = FeedbackOptions()
    parser = argparse.ArgumentParser(
        prog="python -m finetune feedback",
        description="Re-fit the hashtag head on what people answered in the bot, on top of the "
        "base model (give the options the bot runs with; a learned --checkpoint carries its "
        "base). Writes a checkpoint for `python -m bot --checkpoint OUT` only when it is not "
        "worse than the given head on answers it never saw. "
        "Exit status: 0 written, 1 refused by that check, 2 usage or data errors.",
    )
    add_database_argument(parser)
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="checkpoint directory to write; an existing one is replaced in place (a running "
        "bot serving it swaps the new head in) and kept as DIR.previous-<time>",
    )
    add_model_arguments(parser, backend=False)
    add_sharing_arguments(parser)
    parser.add_argument(
        "--person-cap",
        type=float,
        default=defaults.person_cap,
        metavar="PHOTOS",
        help="one person's answers weigh at most as much as this many photos "
        f"(default {defaults.person_cap:g})",
    )
    parser.add_argument(
        "--shown-weight",
        type=float,
        default=defaults.shown_weight,
        help="weight of a shown hashtag that was neither accepted nor rejected, as a "
        f"negative (default {defaults.shown_weight})",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx (default: when the given checkpoint has one)",
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
    check_sharing_arguments(parser, args)
    if args.person_cap <= 0:
        parser.error("--person-cap must be a positive number of photos")
    if problem := database_problem(args.db):
        parser.error(problem)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    try:
        blocked = BlockList(configured_block_list_path(args.blocked_hashtags)).tags
        options = FeedbackOptions(
            min_people=args.min_people,
            min_days=args.min_days,
            person_cap=args.person_cap,
            shown_weight=args.shown_weight,
            loss=args.loss,
            epochs=args.epochs,
            seed=args.seed,
            blocked=blocked,
        )
        models, device = _models(args)
        result = asyncio.run(_learn(args, models, options, device))
    except (
        BlockListError,
        NotEnoughAnswers,
        StoreUnavailable,
        SchemaTooNew,
        *MODEL_SETUP_ERRORS,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    report = result.report
    print(format_report(report))
    if report["written"]:
        how, gone = "", report["answers_gone_since_current"]
        if gone and not result.passed:
            how = (
                f" (it did worse on the held-out answers, but {gone} answers the current head "
                "learned from are gone: deleted answers stop being served)"
            )
        elif not result.passed:
            how = " (--force: it did worse on the held-out answers)"
        print(f"checkpoint written to {args.out}{how}")
        return EXIT_WRITTEN
    print(
        "not written: the re-fitted head did worse than the current one on the held-out answers "
        f"(details in {args.out / 'metrics.json'}; --force writes it anyway)"
    )
    return EXIT_REFUSED


def database_problem(location: str) -> str | None:
    """Why `location` is not a database the bot wrote, in one sentence; None when it may be.

    Checked read-only, before the store would migrate it: a learning command must never turn an
    empty or unrelated file into a bot database."""
    if is_postgres_url(location):
        return None
    path = Path(location)
    if not path.is_file():
        return f"--db {location} does not exist: point it at the bot's database"
    if path.stat().st_size == 0:
        return f"--db {location} is empty: the bot has not written to it yet"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as error:
        return f"--db {location} cannot be read as a SQLite database ({error})"
    if version == 0 or "suggestions" not in tables:
        return (
            f"--db {location} is a SQLite database, but not one the bot wrote (no suggestions "
            "table): point it at the file `python -m bot --db` uses"
        )
    return None


def _models(args: argparse.Namespace):
    """The base to learn on top of and the head served now: a learned --checkpoint carries its
    base; any other model is both."""
    model, device = load_torch_model(args)
    if args.checkpoint and is_learned(model):
        base, base_version = base_of(model, args.checkpoint)
        current = checkpoint_version(args.checkpoint)
        gone_check = learned_from(args.checkpoint)
        return Models(base, base_version, model, current, gone_check), device
    version = _version_of(args)
    return Models(model, version, model, version), device


async def _learn(args, models, options, device):
    store = await Store.open(args.db)
    try:
        answered = await read_answers(store, models.base)
    finally:
        await store.close()
    warn_damaged(answered)
    return await learn_round(
        answered,
        models,
        args.out,
        options,
        force=args.force,
        with_onnx=args.onnx or _has_onnx(args.checkpoint),
        device=device,
    )


def warn_damaged(answered: AnsweredPhotos) -> None:
    """Name the damaged rows left out on stderr, before anything is learned from the rest: so
    they are seen also when too few usable rows remain (the error then is the last line, which
    the bot's --learn-every logs)."""
    for line in answered.damaged[:DAMAGED_SHOWN]:
        print(f"warning: left out {line}", file=sys.stderr)
    if len(answered.damaged) > DAMAGED_SHOWN:
        more = len(answered.damaged) - DAMAGED_SHOWN
        print(f"warning: {more} more damaged rows left out", file=sys.stderr)


def _has_onnx(checkpoint: Path | None) -> bool:
    return bool(checkpoint and (checkpoint / ONNX_FILE).is_file())


def _version_of(args: argparse.Namespace) -> str:
    if args.checkpoint:
        return checkpoint_version(args.checkpoint)
    return zero_shot_version(args.model or DEFAULT_MODEL, args.pretrained or DEFAULT_PRETRAINED)


def format_report(report: dict) -> str:
    answers = report["answers"]
    community = report["community_hashtags"]
    lines = [
        f"answers: {answers['used']} answered photos from {answers['people']} people, "
        f"{answers['people_counted']} of them counted towards sharing ({answers['train']} train, "
        f"{answers['validation']} validation, {answers['held_out']} held out; "
        f"{answers['skipped_other_encoder']} skipped: made by another encoder; "
        f"{answers['damaged']} damaged)",
        f"rows learned from answers: {report['learned_rows']}",
        "whole head: scale {scale:.2f}, shift {shift:+.2f}, popularity prior alpha "
        "{prior_alpha:.2f}".format(**report["recalibration"]),
        "community hashtags: " + (" ".join(f"#{tag}" for tag in community) or "none"),
        f"blend weight on the re-fitted head: {report['blend']['weight']:.2f}",
        "",
        f"{'held-out answers':<24}" + "".join(f"{name:>13}" for name in METRIC_COLUMNS),
    ]
    lines += [metric_row(name, report["held_out"][name]) for name in ("current", "refitted")]
    loss = report["held_out_loss"]
    lines += [
        "",
        f"loss on the held-out answers: current {loss['current']:.3f}, re-fitted "
        f"{loss['refitted']:.3f} (lower explains them better; it must not rise)",
        "precision@1 + recall@5 below the current head's, beyond two standard errors: "
        f"{max(0.0, report['ranking_shortfall']):.3f} (must be 0)",
    ]
    return "\n".join(lines)


# --- python -m finetune community ---------------------------------------------------------


def build_community_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m finetune community",
        description="The hashtags outside the model's vocabulary that people accepted or typed: "
        "how many people used each, and whether the next round of learning shares it. "
        "`block TAG` adds a hashtag to the block list (never suggested, never shared).",
    )
    parser.add_argument("action", nargs="?", choices=("list", "block"), default="list")
    parser.add_argument("tag", nargs="?", help="with block: the hashtag to block")
    add_database_argument(parser)
    add_sharing_arguments(parser)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="DIR",
        help="the model whose vocabulary counts as known (default: HARRISON's 997)",
    )
    parser.add_argument("--seed", type=int, default=FeedbackOptions().seed)
    return parser


def community_main(argv: Sequence[str]) -> int:
    parser = build_community_parser()
    args = parser.parse_args(argv)
    check_sharing_arguments(parser, args)
    path = configured_block_list_path(args.blocked_hashtags)
    try:
        if args.action == "block":
            if not args.tag:
                parser.error("block needs a hashtag: block TAG")
            if path is None:
                parser.error(
                    "block needs the file the bot reads: --blocked-hashtags FILE (or "
                    "$HASHTAG_BLOCKED_HASHTAGS); it is created with the default list in it"
                )
            added = add_to_block_list(path, args.tag)
            print(f"#{args.tag.lstrip('#').lower()} {'added to' if added else 'already in'} {path}")
            return EXIT_WRITTEN
        if problem := database_problem(args.db):
            parser.error(problem)
        blocked = BlockList(path).tags
        vocabulary = _known_vocabulary(args.checkpoint)
        rows = asyncio.run(_community_rows(args, vocabulary, blocked))
    except (BlockListError, StoreUnavailable, SchemaTooNew, *MODEL_SETUP_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{'hashtag':<28}{'people':>8}{'counted':>9}  status")
    for tag, people, counted, status in rows:
        print(f"#{tag:<27}{people:>8}{counted:>9}  {status}")
    if not rows:
        print("(no hashtag outside the vocabulary was used by two people or more)")
    return EXIT_WRITTEN


def _known_vocabulary(checkpoint: Path | None) -> list[str]:
    """The base vocabulary: a learned checkpoint's own, less the community hashtags it shares."""
    if checkpoint is None:
        return load_vocabulary()
    try:
        spec = ModelSpec.from_file(checkpoint / CONFIG_FILE)
    except (OSError, ValueError, TypeError) as error:
        raise ModelLoadError(f"cannot read {checkpoint / CONFIG_FILE}: {error}") from None
    shared = set(spec.provenance.get("community_hashtags", []))
    return [tag for tag in spec.vocabulary if tag not in shared]


async def _community_rows(args, vocabulary: list[str], blocked: frozenset[str]):
    """(tag, people, counted people, status) for every unknown hashtag two people or more used,
    with the status the next round of learning gives it (see finetune/answers.py)."""
    store = await Store.open(args.db)
    try:
        answered = await store.answered_photos(None)
    finally:
        await store.close()
    warn_damaged(answered)
    photos = answered.photos
    everyone = people_per_hashtag(photos, {photo.user_id for photo in photos})
    split = split_of(photos, FeedbackOptions().holdout, args.seed)
    training = [photo for photo, part in zip(photos, split, strict=True) if part == TRAIN]
    counted = people_per_hashtag(training, established_people(photos, args.min_days))
    known = set(vocabulary)
    rows = []
    for tag, people in everyone.items():
        if tag in known or len(people) < 2:
            continue
        voices = len(counted.get(tag, ()))
        if tag in blocked:
            status = "blocked"
        elif voices >= args.min_people:
            status = "shared"
        else:
            status = f"private: {args.min_people - voices} more counted people needed"
        rows.append((tag, len(people), voices, status))
    return sorted(rows, key=lambda row: (-row[1], row[0]))
