"""Writes feedback as fast as it can, printing `ACK <tag>` once each write has returned.

Run by tests/test_durability.py, which kills it with SIGKILL at a random moment.
"""

import asyncio
import sys

import numpy as np

from bot.store import Store
from bot.store.records import ShownEntry


async def main(path: str, run: str) -> None:
    store = await Store.open(path)
    user_id = await store.user_id("telegram", "durability")
    suggestion_id = await store.add_suggestion(
        user_id, "telegram", np.zeros(8, dtype=np.float32), [ShownEntry("beach", 0.5)], "test"
    )
    for i in range(100_000):
        tag = f"{run}-{i}"
        await store.record_feedback(suggestion_id, user_id, [tag], 1, "typed")
        print(f"ACK {tag}", flush=True)  # only now would the bot tell the person "saved"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
