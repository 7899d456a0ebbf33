"""Which engine serves an export on this CPU: measured once, checked against fp32, remembered.

Processors differ too much for a table of names (bf16 is four times faster than fp32 on one
development host and slower on another), so the first start on a CPU times every engine this
machine can run on the calibration photos, at batches of 1, 8 and 32, and keeps the fastest
one whose hashtags match fp32's (`calibration.Agreement`). ONNX Runtime fp32 is the reference
and the fallback. The decision is written beside the export (`engine-choice.json`), keyed by
the CPU, its core count and the runtimes' versions, so a copy on another machine decides again.

`python -m inference.backends.choice DIR` makes the decision in a process of its own: the
serving process runs it as a child, so the engines tried and thrown away never stay in its
memory, and timings are not disturbed by what the server holds.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from inference.backends.calibration import Agreement, agreement, calibration_batch
from inference.backends.derived import graph_stamp, places
from inference.backends.exported import ONNX_FILE, ExportedModel, exported_graph
from inference.backends.onnx_runtime import load_onnx
from inference.children import child_environment
from inference.memory import release_freed_memory
from inference.spec import ModelLoadError

log = logging.getLogger(__name__)

CHOICE_FILE = "engine-choice.json"
BATCHES = (1, 8, 32)
# What a chat's load is served in: a burst of photos waits for one batch, and each doubling of
# the batch costs ViT-B-32 50-100 MB (the Telegram bot stays under 0.6 GB with batches of 8,
# not 16). 32 is measured for the figures and for `--batch-size` on the command line.
SERVING_BATCHES = (1, 8)
# A larger batch is taken only when it is this much faster.
BATCH_GAIN = 1.1
REFERENCE = "onnx"
# CPU features that change which engine is fastest (AVX-512, bf16, VNNI, AMX); the rest of the
# flags (hundreds) do not, and would make a kernel update look like another machine.
RELEVANT_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


def _openvino(bf16: bool) -> Callable[[Path], ExportedModel]:
    def load(directory: Path) -> ExportedModel:
        from inference.backends.openvino_runtime import load_openvino

        return load_openvino(directory, bf16=bf16)

    return load


def _bf16_here() -> bool:
    from inference.backends.openvino_runtime import bf16_supported

    return bf16_supported()


@dataclass(frozen=True)
class Engine:
    name: str
    load: Callable[[Path], ExportedModel]
    available: Callable[[], bool] = lambda: True
    about: str = ""
    # Tried by `auto`. OpenVINO f32 is not: it ran as fast as ONNX Runtime fp32 on both hosts
    # measured, in about twice the memory (it keeps the fp32 weights and a repacked copy).
    candidate: bool = True


ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine("onnx", load_onnx, about="ONNX Runtime, fp32 (the reference)"),
        Engine(
            "onnx-int8",
            lambda directory: load_onnx(directory, int8=True),
            about="ONNX Runtime, int8 weights (dynamic quantisation)",
        ),
        Engine("openvino", _openvino(bf16=False), about="OpenVINO, f32", candidate=False),
        Engine(
            "openvino-bf16",
            _openvino(bf16=True),
            _bf16_here,
            about="OpenVINO, bf16 (where the CPU has bf16 instructions)",
        ),
    )
}


@dataclass
class Trial:
    """One engine's measurement on this CPU."""

    images_per_s: dict[str, float] = field(default_factory=dict)  # by batch size
    min_cosine: float = 0.0
    top5_agreement: float = 0.0
    accepted: bool = False
    error: str = ""

    @property
    def best_rate(self) -> float:
        return max(self.images_per_s.values(), default=0.0)

    def batch_size(self) -> int:
        """The smallest serving batch within BATCH_GAIN of the fastest serving batch."""
        rates = [self.images_per_s.get(str(size), 0.0) for size in SERVING_BATCHES]
        for size, rate in zip(SERVING_BATCHES, rates, strict=True):
            if rate * BATCH_GAIN >= max(rates):
                return size
        return SERVING_BATCHES[-1]


@dataclass
class Decision:
    engine: str
    batch_size: int
    cpu: str
    graph: str  # the graph's stamp: a re-export decides again
    trials: dict[str, Trial]

    def describe(self) -> str:
        """The one log line that says what serves and why."""
        chosen, reference = self.trials[self.engine], self.trials.get(REFERENCE)
        line = f"CPU engine {self.engine}, batches of {self.batch_size}"
        line += f" ({chosen.best_rate:.1f} images/s"
        if reference and self.engine != REFERENCE and reference.best_rate:
            line += f", {chosen.best_rate / reference.best_rate:.2f}x {REFERENCE} fp32"
            line += f"; cosine >= {chosen.min_cosine:.5f}, same top-5 on "
            line += f"{chosen.top5_agreement:.0%}"
        refused = [
            f"{name} ({trial.error or 'disagrees with fp32'})"
            for name, trial in self.trials.items()
            if not trial.accepted
        ]
        line += f"), measured on this CPU ({self.cpu})"
        return line + (f"; refused: {', '.join(refused)}" if refused else "")


@functools.cache  # the processor does not change while a process runs
def cpu_signature() -> tuple[str, str]:
    """(key, description) of what decides the engine: the processor, its relevant features,
    the cores this process may use, and the runtimes' versions."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), "x86_64"):
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:  # not Linux: the processor's name alone
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    features = sorted(flags.intersection(RELEVANT_FLAGS))
    versions = [f"{package} {_version(package)}" for package in ("onnxruntime", "openvino")]
    description = f"{name}, {cores} cores, {' '.join(features) or 'no AVX2'}"
    material = json.dumps([name, cores, features, versions])
    return hashlib.sha256(material.encode()).hexdigest()[:16], description


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def decide(directory: Path, engines: Sequence[Engine] | None = None) -> Decision:
    """Measure each engine this machine can run on the calibration photos and pick the fastest
    that agrees with the reference (always the first measured)."""
    graph, spec, _ = exported_graph(directory)
    pixels = calibration_batch(spec)
    tried = engines or [engine for engine in ENGINES.values() if engine.candidate]
    candidates = [ENGINES[REFERENCE], *(e for e in tried if e.name != REFERENCE)]
    trials: dict[str, Trial] = {}
    reference: tuple[np.ndarray, np.ndarray] | None = None
    for engine in candidates:
        trial = trials[engine.name] = Trial()
        try:
            if not engine.available():
                trial.error = "not supported by this CPU"
                continue
            model = engine.load(directory)
            trial.images_per_s, outputs = _measure(model, pixels)
        except (ModelLoadError, RuntimeError, OSError, ValueError) as error:
            if engine.name == REFERENCE:
                raise
            trial.error = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            log.warning("engine %s cannot run here: %s", engine.name, trial.error)
            continue
        finally:
            model = None
            release_freed_memory()
        reference = reference or outputs
        measured: Agreement = agreement(*outputs, reference)
        trial.min_cosine, trial.top5_agreement = measured.min_cosine, measured.top5_agreement
        trial.accepted = measured.acceptable
    chosen = max(
        (name for name, t in trials.items() if t.accepted), key=lambda n: trials[n].best_rate
    )
    return Decision(
        chosen, trials[chosen].batch_size(), cpu_signature()[1], graph_stamp(graph), trials
    )


def _measure(
    model: ExportedModel, pixels: np.ndarray
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Images/s at each batch size, and the outputs on every calibration photo.

    Each size runs once untimed first (engines compile per input shape), then a few times,
    and its fastest pass counts: a moment of other work on the machine slows one pass, not
    the figure. The outputs come from batches of the largest size.
    """
    rates = {}
    for size in BATCHES[:-1]:
        model.predict_batch(pixels[:size])
        passes = []
        for _ in range(max(2, BATCHES[-1] // (4 * size))):
            start = time.perf_counter()
            model.predict_batch(pixels[:size])
            passes.append(time.perf_counter() - start)
        rates[str(size)] = size / min(passes)
    largest, chunks, passes = BATCHES[-1], [], []
    for first in range(0, len(pixels), largest):
        start = time.perf_counter()
        chunks.append(model.predict_batch(pixels[first : first + largest]))
        passes.append(time.perf_counter() - start)
    # The first pass of this size was its warm-up; with a single pass, it is all there is.
    rates[str(largest)] = largest / min(passes[1:] or passes)
    scores = np.concatenate([chunk[0] for chunk in chunks])
    embeddings = np.concatenate([chunk[1] for chunk in chunks])
    return rates, (scores, embeddings)


# --- the cache of decisions -------------------------------------------------------------------


def _choice_files(directory: Path) -> list[Path]:
    """Beside the export, or in the cache folder when the export's folder is read-only."""
    return [Path(directory) / CHOICE_FILE, places(Path(directory) / ONNX_FILE)[1] / CHOICE_FILE]


def cached_decision(directory: Path) -> Decision | None:
    """The decision made for this CPU and this export, if one was; an unreadable file is
    treated as none (with a warning) and decided again."""
    key, _ = cpu_signature()
    stamp = graph_stamp(Path(directory) / ONNX_FILE)
    for path in _choice_files(directory):
        if not path.is_file():
            continue
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))["decisions"][key]
        except KeyError:
            continue
        except (OSError, ValueError, TypeError) as error:
            log.warning("deciding the CPU engine again: %s is unreadable (%s)", path, error)
            continue
        try:
            decision = Decision(
                **{**entry, "trials": {n: Trial(**t) for n, t in entry["trials"].items()}}
            )
        except (TypeError, KeyError, AttributeError) as error:
            log.warning("deciding the CPU engine again: %s is unreadable (%s)", path, error)
            continue
        if decision.graph == stamp and decision.engine in ENGINES:
            return decision
    return None


def keep_decision(directory: Path, decision: Decision) -> Path:
    """Add it to the first writable choice file, beside earlier CPUs' decisions."""
    key, _ = cpu_signature()
    for path in _choice_files(directory):
        try:
            known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            decisions = known.get("decisions", {}) if isinstance(known, dict) else {}
        except (OSError, ValueError):
            decisions = {}
        decisions[key] = asdict(decision)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            partial.write_text(json.dumps({"decisions": decisions}, indent=1), encoding="utf-8")
            partial.replace(path)
            return path
        except OSError as error:
            log.info("cannot keep the engine decision in %s (%s)", path, error)
    raise ModelLoadError(f"no writable place for the engine decision of {directory}")


def decision_for(directory: Path) -> Decision:
    """The cached decision, or one made now by a child process (see the module's docstring)."""
    decision = cached_decision(directory)
    if decision is not None:
        return decision
    log.info("measuring the CPU engines for %s on this CPU, once (seconds)", directory)
    command = [sys.executable, "-m", "inference.backends.choice", str(directory)]
    status = subprocess.run(command, env=child_environment(), check=False).returncode
    decision = cached_decision(directory) if status == 0 else None
    if decision is None:
        raise ModelLoadError(
            f"choosing a CPU engine for {directory} failed (exit status {status}; its error is "
            "printed above): use --backend onnx, or --backend torch"
        )
    return decision


def load_engine(directory: Path, backend: str = "auto") -> ExportedModel:
    """The export served by `backend`, or with `auto` by the engine chosen for this CPU.

    A chosen engine that no longer loads (after its files were made again) leaves the
    reference serving, with a warning: a start never fails for want of a faster engine.
    """
    if backend != "auto":
        model = ENGINES[backend].load(directory)
        known = cached_decision(directory)
        if known and backend in known.trials and known.trials[backend].images_per_s:
            model.batch_size = known.trials[backend].batch_size()
        return model
    decision = decision_for(directory)
    try:
        model = ENGINES[decision.engine].load(directory)
    except (ModelLoadError, RuntimeError, OSError) as error:
        if decision.engine == REFERENCE:
            raise
        log.warning(
            "the chosen CPU engine %s does not load (%s); serving with %s",
            decision.engine,
            error,
            REFERENCE,
        )
        return load_onnx(directory)
    model.batch_size = decision.batch_size
    log.info("%s", decision.describe())
    return model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference.backends.choice",
        description="Measure the CPU engines on an export and keep the decision beside it.",
    )
    parser.add_argument("directory", type=Path, help="a folder with config.json and model.onnx")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    try:
        decision = decide(args.directory)
        keep_decision(args.directory, decision)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
