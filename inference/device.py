"""Choosing where the model runs and in which precision.

torch is imported only when the answer needs it: a bot serving ONNX Runtime on a CPU never
loads it (about 500 MB of resident memory with PyPI's CUDA build).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(RuntimeError):
    """The user asked for a device this machine does not have."""


def resolve_device(choice: str = "auto") -> torch.device:
    """Map `auto|cpu|cuda` (or `cuda:N`) to a device that really exists here."""
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"--device {choice} was requested but no CUDA GPU is visible to torch; "
            "use --device cpu or --device auto"
        )
    return torch.device(choice)


def serving_device(choice: str = "auto") -> str:
    """`resolve_device`'s answer as a name ("cpu", "cuda", "cuda:1"), found without importing
    torch when it can only be the CPU: asked for, or `auto` on a Linux without NVIDIA's driver."""
    if choice == "cpu" or (choice == "auto" and not _nvidia_driver_possible()):
        return "cpu"
    return str(resolve_device(choice))


def _nvidia_driver_possible() -> bool:
    """False only where CUDA certainly cannot work: Linux with no NVIDIA kernel driver loaded."""
    return sys.platform != "linux" or Path("/proc/driver/nvidia/version").exists()


def inference_dtype(device: torch.device) -> torch.dtype:
    """Half precision on GPUs; fp32 on CPUs.

    torch on a CPU is the reference (`--backend torch`): the faster CPU precisions are served
    from the export, each checked against fp32 on this CPU first (inference/backends/choice.py).
    """
    import torch

    return torch.float16 if device.type == "cuda" else torch.float32
