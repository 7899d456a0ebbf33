"""One of several bot processes sharing one database (tests/test_scale.py starts four).

    python -m tests.scale_worker DB WORKER WORKERS FOLDER CONFIG.json WEIGHTS.safetensors

The whole core runs here (engine, HashtagService with its profile cache, store), as in
`python -m bot`; only the chat platform is left out. In step with the others (files in
FOLDER mark who is done):
1. every worker answers a photo from each of the same people (so each caches their profile);
2. each person answers on one worker only (person p on worker p % WORKERS): their own hashtag
   `#pNluna` and two of the suggested ones;
3. every worker answers each person's next photo and prints, as JSON, what it saw: the
   person's saved hashtags, and the hashtags of that suggestion.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bot.core.service import HashtagService, UserRef
from bot.store import Store
from inference.engine import InferenceEngine
from inference.loading import load_zero_shot
from inference.vocab import load_vocabulary
from tests.corpus import jpeg

PEOPLE = 8


async def main(db: str, worker: int, workers: int, folder: Path, config: str, weights: str):
    model = load_zero_shot(config, weights, load_vocabulary())
    store = await Store.open(db)
    async with InferenceEngine(model, "cpu") as engine:
        service = HashtagService(engine, store, rate_limit=None)
        people = [UserRef("telegram", f"person{p}") for p in range(PEOPLE)]
        first = [await service.suggest(person, [jpeg(seed=p)]) for p, person in enumerate(people)]
        await all_done("seen", worker, workers, folder)
        for p, person in enumerate(people):
            if p % workers == worker:
                await service.add_own_tags(person, first[p].id, f"#p{p}luna")
                await service.accept(person, first[p].id, [tag for tag, _ in first[p].tags[:2]])
        await all_done("answered", worker, workers, folder)
        seen = {}
        for p, person in enumerate(people):
            again = await service.suggest(person, [jpeg(seed=p)])
            saved = [tag for tag, _ in await service.top_hashtags(person, limit=100)]
            seen[person.user_id] = {"saved": saved, "suggested": [t for t, _ in again.tags]}
    await store.close()
    print(json.dumps(seen))


async def all_done(step: str, worker: int, workers: int, folder: Path) -> None:
    """Mark this worker done with `step`, then wait for the others."""
    (folder / f"{step}-{worker}").touch()
    while len(list(folder.glob(f"{step}-*"))) < workers:
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    db, worker, workers, folder, config, weights = sys.argv[1:7]
    asyncio.run(main(db, int(worker), int(workers), Path(folder), config, weights))
