"""Folders written aside and renamed into place, so a reader never sees half of one.

A process killed while writing leaves its staging folder behind (a checkpoint or an export is
hundreds of MB); the next writer of the same folder removes such leftovers once they are
clearly abandoned.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

# Writing a staged folder takes seconds to a minute; one untouched for this long is abandoned.
ABANDONED_AFTER_S = 3600.0


def fresh_staging_dir(target: Path) -> Path:
    """An empty `.NAME.partial-PID` beside `target`, after clearing abandoned ones."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.partial-*"):
        try:
            abandoned = now - leftover.stat().st_mtime > ABANDONED_AFTER_S
        except FileNotFoundError:  # another process cleared it first
            continue
        if abandoned:
            shutil.rmtree(leftover, ignore_errors=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging
