"""Several bot processes on one PostgreSQL database at once (tests/scale_worker.py)."""

from __future__ import annotations

import asyncio
import json
import sys

from bot.store import Store
from tests.scale_worker import PEOPLE

WORKERS = 4


async def test_four_processes_share_one_postgres_database(postgres_url, tiny_clip_files, tmp_path):
    await (await Store.open(postgres_url)).close()  # migrated once, before the race
    workers = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.scale_worker", postgres_url, str(worker)),
            *(str(WORKERS), str(tmp_path), *tiny_clip_files),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for worker in range(WORKERS)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(w.communicate() for w in workers)), 300)
    for worker, (_, errors) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, errors.decode()
    seen = [json.loads(out) for out, _ in outputs]

    for p in range(PEOPLE):
        for worker in range(WORKERS):
            view = seen[worker][f"person{p}"]
            # What one process saved for this person is seen by every process...
            assert f"p{p}luna" in view["saved"], (worker, p, view["saved"])
            # ... and nothing of anybody else's.
            assert [tag for tag in view["saved"] if tag.endswith("luna")] == [f"p{p}luna"]
            # The profile every process had cached in step 1 was refreshed with that answer.
            assert f"p{p}luna" in view["suggested"], (worker, p, view["suggested"])

    store = await Store.open(postgres_url)
    async with store._reading() as db:
        ((users,),) = await db.fetch("SELECT COUNT(*) FROM users")
        ((suggestions,),) = await db.fetch("SELECT COUNT(*) FROM suggestions")
        typed_rows = await db.fetch(
            "SELECT tag, COUNT(*) FROM feedback WHERE source = 'typed' GROUP BY tag"
        )
    await store.close()
    assert users == PEOPLE  # people first seen by four processes at once: one row each
    assert suggestions == 2 * PEOPLE * WORKERS
    # Every answer stored exactly once.
    assert {tag: count for tag, count in typed_rows} == {f"p{p}luna": 1 for p in range(PEOPLE)}
