"""`python -m finetune export`: a checkpoint as an ONNX graph, for ONNX Runtime or Triton.

What the graph holds is described in inference/backends/export.py, which also writes the zero-shot
model's export that a CPU serves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.backends.export import export_onnx
from inference.backends.exported import ONNX_FILE
from inference.loading import load_checkpoint
from inference.spec import ModelLoadError


def export_checkpoint(checkpoint: Path, destination: Path | None = None) -> Path:
    return export_onnx(load_checkpoint(checkpoint), destination or checkpoint / ONNX_FILE)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finetune export",
        description="Export a checkpoint (vision encoder + hashtag head) as one ONNX graph.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="DIR")
    parser.add_argument("--onnx", type=Path, metavar="OUT.onnx", help=f"default: DIR/{ONNX_FILE}")
    args = parser.parse_args(argv)
    try:
        written = export_checkpoint(args.checkpoint, args.onnx)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} (inputs: pixels [batch, 3, H, W]; outputs: logits, embedding)")
    return 0
