"""Staging folders: a killed writer's leftovers are cleared, a live writer's are not."""

import os
import time

from inference.staging import ABANDONED_AFTER_S, fresh_staging_dir


def test_abandoned_staging_folders_are_cleared_and_live_ones_kept(tmp_path):
    long_ago = time.time() - ABANDONED_AFTER_S - 60
    abandoned = tmp_path / ".model.partial-111"
    (abandoned / "half").mkdir(parents=True)
    os.utime(abandoned, (long_ago, long_ago))
    live = tmp_path / ".model.partial-222"  # another process writing right now
    live.mkdir()
    unrelated = tmp_path / ".other.partial-333"
    unrelated.mkdir()
    os.utime(unrelated, (long_ago, long_ago))

    staging = fresh_staging_dir(tmp_path / "model")

    assert staging.is_dir() and not list(staging.iterdir())
    assert staging.name == f".model.partial-{os.getpid()}"
    assert not abandoned.exists() and live.exists() and unrelated.exists()
