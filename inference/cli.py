"""`python -m inference IMAGE...`: hashtags for image files, through the batched engine."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tqdm import tqdm

from inference.engine import InferenceEngine, Prediction
from inference.images import ImageLimits, ImageRejected, check_file_size
from inference.options import (
    MODEL_SETUP_ERRORS,
    add_model_arguments,
    check_model_arguments,
    load_model_from_args,
)

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="Suggest hashtags for images. Exit status: 0 when every image got "
        "hashtags, 1 when any image was rejected, 2 on usage or model-loading errors.",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    add_model_arguments(parser)
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="hashtags per image")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="largest forward-pass batch (default 8 on a CPU, 128 on a GPU)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    if args.top_k < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--top-k and --batch-size must be at least 1")
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    try:
        model, device = load_model_from_args(args)
    except MODEL_SETUP_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    engine = InferenceEngine(model, device, max_batch_size=args.batch_size)
    return asyncio.run(_print_hashtags(args, engine))


async def _print_hashtags(args: argparse.Namespace, engine: InferenceEngine) -> int:
    status = EXIT_OK
    async with engine:
        progress = tqdm(total=len(args.images), unit="image", disable=None, file=sys.stderr)
        async for path, outcome in predict_files(engine, args.images):
            progress.update()
            rejected = isinstance(outcome, ImageRejected)
            status = EXIT_REJECTED if rejected else status
            line = format_result(path, outcome, args.top_k, as_json=args.json)
            # Plain mode keeps stdout to hashtags only, so it can be piped.
            print(line, file=sys.stderr if rejected and not args.json else sys.stdout)
        progress.close()
    return status


async def predict_files(
    engine: InferenceEngine, paths: Sequence[Path]
) -> AsyncIterator[tuple[Path, Prediction | ImageRejected]]:
    """Results in input order, while later files are already being read, decoded and batched.

    A window of four batches in flight keeps the model fed without holding every file in memory.
    """
    window = asyncio.Semaphore(min(engine.max_pending, 4 * engine.max_batch_size))

    async def one(path: Path) -> Prediction | ImageRejected:
        async with window:
            try:
                data = await asyncio.to_thread(read_image_file, path, engine.limits)
                return await engine.predict(data)
            except ImageRejected as rejection:
                return rejection

    tasks = [asyncio.ensure_future(one(path)) for path in paths]
    try:
        for path, task in zip(paths, tasks, strict=True):
            yield path, await task
    finally:
        for task in tasks:
            task.cancel()


def read_image_file(path: Path, limits: ImageLimits) -> bytes:
    """Read a file, checking its size first so a huge file is never loaded into memory."""
    try:
        check_file_size(path.stat().st_size, limits)
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageRejected("No such file.") from None
    except IsADirectoryError:
        raise ImageRejected("This is a directory, not an image file.") from None
    except OSError as error:
        raise ImageRejected(
            "Cannot read the file: {reason}.", reason=error.strerror or error
        ) from None


def format_result(
    path: Path, outcome: Prediction | ImageRejected, top_k: int, *, as_json: bool
) -> str:
    if isinstance(outcome, ImageRejected):
        if as_json:
            return json.dumps({"image": str(path), "error": str(outcome)}, ensure_ascii=False)
        return f"{path}: error: {outcome}"
    top = outcome.top(top_k)
    if as_json:
        hashtags = [{"tag": tag, "score": round(score, 4)} for tag, score in top]
        return json.dumps({"image": str(path), "hashtags": hashtags}, ensure_ascii=False)
    return f"{path}: " + " ".join(f"#{tag}" for tag, _ in top)
