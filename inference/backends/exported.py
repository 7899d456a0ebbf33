"""What every engine serving an export shares: the files it reads and the model it returns.

`ExportedModel` stands in for HashtagModel wherever the engine uses one: it has the same
`spec`, `encoder_id` and `predict_batch`, so batching, decoding and everything above them are
shared by all engines. Nothing here imports torch: a bot serving an export stays lean.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from inference.spec import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError, ModelSpec

ONNX_FILE = "model.onnx"

# pixels (B, C, H, W) float32 -> (logits, embeddings), both float32
RunGraph = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ExportedModel:
    """An exported graph run by one engine (`engine` names it: "onnx", "openvino-bf16", ...)."""

    def __init__(self, run: RunGraph, spec: ModelSpec, encoder_id: str, engine: str):
        self._run, self.spec, self.encoder_id, self.engine = run, spec, encoder_id, engine
        # The batch this engine was measured fastest at on this CPU (set by the choice);
        # None: the engine's default.
        self.batch_size: int | None = None

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, embeddings) as float32, like HashtagModel's forward."""
        logits, embeddings = self._run(np.ascontiguousarray(pixels, dtype=np.float32))
        return np.asarray(logits, np.float32), np.asarray(embeddings, np.float32)

    def predict_batch(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = self(pixels)
        scores = np.exp(-np.logaddexp(0, -logits))  # the sigmoid, without overflow warnings
        return scores.astype(np.float32), embeddings.astype(np.float16)


def exported_graph(directory: Path) -> tuple[Path, ModelSpec, str]:
    """(model.onnx, its spec, its encoder's fingerprint), or a ModelLoadError saying what to do."""
    directory = Path(directory)
    graph = directory / ONNX_FILE
    if not graph.is_file():
        raise ModelLoadError(
            f"{graph} is missing: run `python -m finetune export --checkpoint {directory}` "
            "first, or use --backend torch"
        )
    spec = ModelSpec.from_file(directory / CONFIG_FILE)  # a ModelLoadError naming the field
    return graph, spec, _encoder_id(directory, spec)


def cannot_load(graph: Path, engine: str, error: BaseException) -> ModelLoadError:
    return ModelLoadError(
        f"{engine} cannot load {graph}: {error}\nExport it again (`python -m finetune export "
        f"--checkpoint {graph.parent}`), or use --backend torch"
    )


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
