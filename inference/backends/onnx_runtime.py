"""ONNX Runtime on the CPU: the exported graph in fp32 (`onnx`, the reference every faster
engine is checked against) or with int8 weights (`onnx-int8`, dynamic quantisation)."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime

from inference.backends.derived import load_derived
from inference.backends.exported import ONNX_FILE, ExportedModel, cannot_load, exported_graph


def load_onnx(checkpoint: Path, int8: bool = False) -> ExportedModel:
    """The checkpoint's `model.onnx` (written by `python -m finetune export`).

    `int8`: ONNX Runtime's dynamic quantisation of the weights, made once and kept beside the
    graph (or in the cache folder when the checkpoint is read-only).
    """
    graph, spec, encoder_id = exported_graph(checkpoint)
    if not int8:
        return ExportedModel(_session_runner(graph, "onnx"), spec, encoder_id, "onnx")
    run = load_derived(
        graph,
        "onnx-int8",
        lambda folder: _quantize(graph, folder / ONNX_FILE),
        lambda folder: _session_runner(folder / ONNX_FILE, "onnx-int8"),
    )
    return ExportedModel(run, spec, encoder_id, "onnx-int8")


def _session_runner(graph: Path, engine: str):
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Lean over fast: without the arena (memory kept reserved after a burst) and the memory
    # pattern (one block planned for all of a batch's intermediates), ViT-B-32 at batch 16
    # peaked at 512 MB instead of 590, for about 5% less throughput at batch 16 and none at
    # batch 1 (2-core CPU; benchmarks/README.md).
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    try:
        session = onnxruntime.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # ONNX Runtime's own errors derive from Exception alone
        raise cannot_load(graph, engine, error) from None

    def run(pixels):
        logits, embeddings = session.run(None, {"pixels": pixels})
        return logits, embeddings

    return run


def _quantize(graph: Path, destination: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs a line per tensor (and advice for static quantisation) on the root
    # logger; none of it is for the operator.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(graph), str(destination), weight_type=QuantType.QInt8)
    finally:
        logging.disable(previous)
