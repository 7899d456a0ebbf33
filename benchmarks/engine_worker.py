"""One engine alone in a process, for benchmarks/inference.py: its rates at batches of 1, 8
and 32, its peak RSS, and its outputs on the calibration photos (for the agreement with fp32).

    python benchmarks/engine_worker.py ENGINE CHECKPOINT OUTPUTS.npz SECONDS

torch is imported only for the torch engines, so an exported engine's peak is its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.backends.calibration import calibration_batch
from inference.backends.choice import ENGINES
from inference.spec import ModelSpec

BATCHES = (1, 8, 32)


def load(name: str, checkpoint: Path):
    if name in ENGINES:
        return ENGINES[name].load(checkpoint)
    import torch

    from inference.loading import load_checkpoint

    model = load_checkpoint(checkpoint).eval()
    return model.to(torch.bfloat16) if name == "torch-bf16" else model


def main() -> None:
    name, checkpoint, outputs, seconds = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    model = load(name, checkpoint)
    pixels = calibration_batch(ModelSpec.from_file(checkpoint / "config.json"))
    rates = {}
    for batch in BATCHES:
        model.predict_batch(pixels[:batch])  # warm-up (engines compile per input shape)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < float(seconds) or done < 2 * batch:
            model.predict_batch(pixels[:batch])
            done += batch
        rates[str(batch)] = done / (time.perf_counter() - start)
    halves = [model.predict_batch(pixels[i : i + 32]) for i in (0, 32)]
    scores = np.concatenate([half[0] for half in halves])
    np.savez(outputs, scores=scores, embeddings=np.concatenate([half[1] for half in halves]))
    # VmHWM, not getrusage: a child's ru_maxrss starts from its parent's at fork.
    status = Path("/proc/self/status").read_text()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps({"images_per_s": rates, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
