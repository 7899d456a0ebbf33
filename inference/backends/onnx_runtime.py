"""Serving an exported checkpoint with ONNX Runtime (`--backend onnx`, optionally `--int8`).

`OnnxHashtagModel` stands in for HashtagModel wherever the engine uses one: it has the same
`spec`, `encoder_id` and `predict_batch`, so batching, decoding and everything above them are
shared with the torch backend. Nothing here imports torch: a bot serving ONNX stays lean.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime

from inference.spec import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError, ModelSpec, default_cache_dir

log = logging.getLogger(__name__)

ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"  # the int8 name gets a version stamp


class OnnxHashtagModel:
    def __init__(self, session: onnxruntime.InferenceSession, spec: ModelSpec, encoder_id: str):
        self.session, self.spec, self.encoder_id = session, spec, encoder_id

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, embeddings) as float32, like HashtagModel's forward."""
        logits, embeddings = self.session.run(None, {"pixels": pixels.astype(np.float32)})
        return logits, embeddings

    def predict_batch(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = self(pixels)
        scores = np.exp(-np.logaddexp(0, -logits))  # the sigmoid, without overflow warnings
        return scores.astype(np.float32), embeddings.astype(np.float16)


def load_onnx(checkpoint: Path, int8: bool = False) -> OnnxHashtagModel:
    """The checkpoint's `model.onnx` (written by `python -m finetune export`).

    `int8`: ONNX Runtime's dynamic quantisation of the weights, made once and kept next to
    the graph (or in the cache folder when the checkpoint is read-only).
    """
    checkpoint = Path(checkpoint)
    graph = checkpoint / ONNX_FILE
    if not graph.is_file():
        raise ModelLoadError(
            f"{graph} is missing: run `python -m finetune export --checkpoint {checkpoint}` "
            "first, or use --backend torch"
        )
    spec = ModelSpec.from_file(checkpoint / CONFIG_FILE)  # a ModelLoadError naming the field
    if int8:
        graph = _quantized(graph)
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
        raise ModelLoadError(
            f"{graph} cannot be loaded: {error}\nExport it again (`python -m finetune export "
            f"--checkpoint {checkpoint}`), or use --backend torch"
        ) from None
    return OnnxHashtagModel(session, spec, _encoder_id(checkpoint, spec))


def _encoder_id(checkpoint: Path, spec: ModelSpec) -> str:
    """Written into config.json by save_checkpoint; older checkpoints: read the vision weights."""
    if "encoder" in spec.provenance:
        return spec.provenance["encoder"]
    from safetensors import safe_open  # only checkpoints older than the fingerprint get here

    from inference.model import encoder_fingerprint

    with safe_open(str(checkpoint / WEIGHTS_FILE), framework="pt") as weights:
        visual = {
            key: weights.get_tensor(key)
            for key in weights.keys()  # noqa: SIM118 (safe_open is not iterable)
            if key.startswith("visual.")
        }
    return encoder_fingerprint(visual)


def _quantized(graph: Path) -> Path:
    """Next to the graph, or in the cache folder when the checkpoint is read-only."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    stamp = f"{graph.stat().st_size}-{graph.stat().st_mtime_ns}"
    for folder in (graph.parent, default_cache_dir() / "onnx" / graph.parent.name):
        quantized = folder / INT8_FILE.replace(".onnx", f".{stamp}.onnx")
        if quantized.is_file():
            return quantized
        try:
            folder.mkdir(parents=True, exist_ok=True)
            log.info("quantising %s to int8 (once) into %s", graph, folder)
            partial = quantized.with_suffix(".tmp")
            quantize_dynamic(str(graph), str(partial), weight_type=QuantType.QInt8)
            partial.replace(quantized)
            return quantized
        except OSError as error:
            log.info("cannot write the int8 graph into %s (%s)", folder, error)
    raise ModelLoadError(f"no writable place for the int8 version of {graph}")
