"""Writing a HashtagModel as an ONNX graph, for ONNX Runtime (and Triton).

The graph is the vision encoder and the hashtag head: pixels (batch, 3, H, W) in, `logits`
(batch, hashtags) and the normalised `embedding` (batch, dim) out, with a dynamic batch axis.
Everything a server needs besides the weights (vocabulary, thresholds, preprocessing) is in the
model's metadata, as JSON. The weights sit beside the graph in `model.onnx.data`, which ONNX
Runtime maps from disk instead of parsing: measured on ViT-B-32, that keeps loading at about
400 MB peak, where the single-file graph peaked at 430 or 620 MB from run to run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import torch

from inference.backends.exported import ONNX_FILE
from inference.loading import write_config
from inference.model import HashtagModel
from inference.staging import fresh_staging_dir

OPSET = 18
# Up to this many images per call; the batch axis is dynamic below it.
MAX_BATCH = 4096


def export_onnx(model: HashtagModel, destination: Path) -> Path:
    model = model.float().eval()
    side = model.spec.input_side
    example = torch.zeros(2, 3, side, side)
    # torch.export's exporter, the one torch maintains (the TorchScript one is deprecated).
    # It writes the weights beside the graph itself; only the graph is read back, to add the
    # metadata, so the weights are never held twice.
    weights = destination.with_name(destination.name + ".data")
    weights.unlink(missing_ok=True)
    torch.onnx.export(
        model,
        (example,),
        str(destination),
        input_names=["pixels"],
        output_names=["logits", "embedding"],
        dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}},
        opset_version=OPSET,
        dynamo=True,
        external_data=True,
        verbose=False,
    )
    graph = onnx.load(str(destination), load_external_data=False)
    spec = model.spec
    for key, value in {
        "vocabulary": spec.vocabulary,
        "thresholds": spec.thresholds,
        "preprocess": spec.preprocess,
        "architecture": spec.architecture,
        "provenance": spec.provenance,
    }.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(graph, str(destination))
    return destination


def export_for_serving(model: HashtagModel, directory: Path) -> Path:
    """config.json + model.onnx (+ its weights): all that `load_onnx` reads, with no torch
    weights beside them. Written aside and renamed into place, so neither a crash nor a second
    process starting at the same time ever sees half of it."""
    directory = Path(directory)
    staging = fresh_staging_dir(directory)
    try:
        write_config(model, staging)
        export_onnx(model, staging / ONNX_FILE)
        staging.rename(directory)
    except OSError:
        if not (directory / ONNX_FILE).is_file():  # not another process's export winning
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
