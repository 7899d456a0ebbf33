"""`python -m inference.first_start`: the zero-shot model's first start on a CPU, in a process
of its own. Run by `load_model_from_args`, not by hand.

It builds the hashtag head and exports the model for ONNX Runtime into the cache, then exits.
Everything that work needs (torch, open_clip, the exporter: about 1.35 GB at its peak on
ViT-B-32) leaves with this process, so the process that serves never imports torch and is as
lean on its first start as on every later one (benchmarks/README.md).

Exit status: 0 exported; EXIT_SETUP_FAILED when the model cannot be loaded at all;
EXIT_EXPORT_FAILED when only the export failed (torch can still serve). The reason is written
to the --report file, for the serving process to say in its own words.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from inference.options import (
    EXIT_EXPORT_FAILED,
    EXIT_SETUP_FAILED,
    MODEL_SETUP_ERRORS,
    add_model_arguments,
    load_torch_model,
)

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.first_start", description=__doc__)
    add_model_arguments(parser, backend=False)
    parser.add_argument("--report", type=Path, required=True, metavar="FILE")
    parser.add_argument("directory", type=Path, help="where the export goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    for chatty in ("onnx_ir", "onnxscript"):  # a line per graph pass and initializer
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        model, _ = load_torch_model(args)
    except MODEL_SETUP_ERRORS as error:
        args.report.write_text(str(error), encoding="utf-8")
        return EXIT_SETUP_FAILED
    from inference.backends.export import export_for_serving

    log.info("exporting the zero-shot model for ONNX Runtime, once, into %s", args.directory)
    try:
        export_for_serving(model, args.directory)
    except Exception as error:  # an exporter failure of any kind: torch can still serve
        args.report.write_text(f"{type(error).__name__}: {error}", encoding="utf-8")
        return EXIT_EXPORT_FAILED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
