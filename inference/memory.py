"""Giving freed memory back to the operating system after large, one-off work."""

from __future__ import annotations

import ctypes
import gc


def release_freed_memory() -> None:
    """Return freed heap memory to the system (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed memory for reuse: after a first start drops CLIP's text tower, about
    200 MB of it (ViT-B-32) would otherwise stay counted in the process's resident size, which
    is what a container's memory limit counts (benchmarks/README.md).
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return
    trim(0)
