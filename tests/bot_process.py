"""Starting `python -m bot` as a real process, on the tiny test model."""

import asyncio
import os
import sys


async def start_bot(tiny_clip_files, db, env: dict[str, str], *options: str):
    """The bot, with stdout and stderr together in `process.stdout`."""
    config_path, weights_path = tiny_clip_files
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--model", config_path, "--pretrained", weights_path,
        "--device", "cpu", "--db", str(db), *options,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
