"""OpenVINO on the CPU: the exported graph in f32 (`openvino`) or bf16 (`openvino-bf16`).

OpenVINO is the runtime that uses what recent CPUs add for neural networks (AVX512-BF16 and
AMX on Intel, AVX512-BF16 on AMD Zen 4 and later), where ONNX Runtime's x86 kernels stay in
fp32 or int8. bf16 reads an IR whose weights are stored in fp16 (made once from the graph):
half the file, and measured on ViT-B-32 about 300 MB less resident memory than converting
from the fp32 graph at start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino

from inference.backends.derived import load_derived
from inference.backends.exported import ExportedModel, cannot_load, exported_graph

IR_FILE = "model.xml"  # with model.bin beside it


def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin has bf16 kernels here (it asks the processor)."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def load_openvino(checkpoint: Path, bf16: bool = False) -> ExportedModel:
    graph, spec, encoder_id = exported_graph(checkpoint)
    engine = "openvino-bf16" if bf16 else "openvino"
    if not bf16:
        return ExportedModel(_compiled_runner(graph, "f32", engine), spec, encoder_id, engine)
    run = load_derived(
        graph,
        engine,
        lambda folder: _write_fp16_ir(graph, folder / IR_FILE),
        lambda folder: _compiled_runner(folder / IR_FILE, "bf16", engine),
    )
    return ExportedModel(run, spec, encoder_id, engine)


def _compiled_runner(path: Path, precision: str, engine: str):
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    try:
        compiled = _core().compile_model(str(path), "CPU", config)
    except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
        raise cannot_load(path, engine, error) from None
    logits, embeddings = compiled.output("logits"), compiled.output("embedding")

    def run(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = compiled.create_infer_request().infer({0: pixels})
        return np.array(results[logits]), np.array(results[embeddings])

    return run


def _write_fp16_ir(graph: Path, destination: Path) -> None:
    openvino.save_model(_core().read_model(str(graph)), str(destination), compress_to_fp16=True)


_CORE: openvino.Core | None = None


def _core() -> openvino.Core:
    """One OpenVINO runtime per process: it holds the plugins and their thread pools."""
    global _CORE
    if _CORE is None:
        _CORE = openvino.Core()
    return _CORE
