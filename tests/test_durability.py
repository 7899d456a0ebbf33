"""`kill -9` in the middle of a burst of feedback loses nothing acknowledged."""

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kill_9_mid_burst_loses_no_acknowledged_feedback(tmp_path):
    path = tmp_path / "bot.sqlite3"
    acknowledged: set[str] = set()
    chooser = random.Random(1)
    for run in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.durability_writer", str(path), f"run{run}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        kill_after = chooser.randint(5, 60)
        for count, line in enumerate(writer.stdout, 1):
            acknowledged.add(line.split()[1])
            if count >= kill_after:
                writer.send_signal(signal.SIGKILL)
                break
        writer.wait(timeout=60)
        writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL

        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {tag for (tag,) in db.execute("SELECT tag FROM feedback")}
        assert acknowledged <= stored, sorted(acknowledged - stored)[:5]
    assert len(acknowledged) >= 15
