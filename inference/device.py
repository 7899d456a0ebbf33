"""Choosing where the model runs and in which precision."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(RuntimeError):
    """The user asked for a device this machine does not have."""


def resolve_device(choice: str = "auto") -> torch.device:
    """Map `auto|cpu|cuda` (or `cuda:N`) to a device that really exists here."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"--device {choice} was requested but no CUDA GPU is visible to torch; "
            "use --device cpu or --device auto"
        )
    return torch.device(choice)


def inference_dtype(device: torch.device) -> torch.dtype:
    """Half precision on GPUs; fp32 on CPUs.

    The development CPUs have no bf16 hardware: bf16 autocast measured 3-5x slower than fp32
    there, so the CPU path stays in fp32.
    """
    return torch.float16 if device.type == "cuda" else torch.float32
