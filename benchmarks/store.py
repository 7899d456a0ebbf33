"""Stored answers per second and suggestion round trips: SQLite and PostgreSQL, 1 and 4 writers.

    python benchmarks/store.py [--seconds 10]

Each writer is a process of its own with its own connection (SQLite) or pool (PostgreSQL), as
bot processes are. A writer repeats what the bot does for one photo and its answer: the
suggestion round trip (find or create the person, read their history version, store the
suggestion, attach the reply message) and then the answer (`record_feedback` with three
hashtags, one transaction). PostgreSQL is a throwaway local server (tests/postgres_server.py)
with fsync on; SQLite runs in WAL mode with synchronous=FULL, the bot's settings. Seeded; the
last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.store import Store
from bot.store.records import ShownEntry
from tests.postgres_server import INSTALL_HINT, PostgresServer, find_binaries

PEOPLE_PER_WRITER = 50
SHOWN = [ShownEntry(f"tag{i}", 0.9 - i / 20) for i in range(10)]


async def write(db: str, writer: int, seconds: float, start_at: float) -> dict:
    """One writer's loop; returns its answers, and its round-trip and answer latencies."""
    rng = np.random.default_rng(writer)
    store = await Store.open(db)
    round_trips, answers = [], []
    await asyncio.sleep(max(0.0, start_at - time.time()))  # all writers start together
    end = time.time() + seconds
    while time.time() < end:
        person = f"writer{writer}-person{int(rng.integers(PEOPLE_PER_WRITER))}"
        embedding = rng.standard_normal(512).astype(np.float32)
        begin = time.perf_counter()
        user_id = await store.user_id("telegram", person)
        await store.history_version(user_id)
        suggestion_id = await store.add_suggestion(user_id, "telegram", embedding, SHOWN, "bench")
        await store.attach_reply(suggestion_id, person, str(suggestion_id))
        middle = time.perf_counter()
        tags = [entry.tag for entry in SHOWN[:3]]
        await store.record_feedback(suggestion_id, user_id, tags, 1, "button")
        answers.append(time.perf_counter() - middle)
        round_trips.append(middle - begin)
    await store.close()
    return {"answers": len(answers), "round_trip_s": round_trips, "answer_s": answers}


def run_writers(db: str, writers: int, seconds: float) -> dict:
    start_at = time.time() + 3  # time for every process to import and connect
    options = ["--db", db, "--seconds", str(seconds), "--start-at", str(start_at)]
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--writer", str(w), *options], stdout=subprocess.PIPE
        )
        for w in range(writers)
    ]
    results = [json.loads(p.communicate()[0]) for p in processes]
    if any(p.returncode for p in processes):
        raise SystemExit("a writer failed")
    round_trips = np.concatenate([r["round_trip_s"] for r in results]) * 1000
    answers = np.concatenate([r["answer_s"] for r in results]) * 1000
    return {
        "answers_per_s": sum(r["answers"] for r in results) / seconds,
        "round_trip_ms_p50": float(np.percentile(round_trips, 50)),
        "round_trip_ms_p95": float(np.percentile(round_trips, 95)),
        "answer_ms_p50": float(np.percentile(answers, 50)),
        "answer_ms_p95": float(np.percentile(answers, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer is not None:
        print(json.dumps(asyncio.run(write(args.db, args.writer, args.seconds, args.start_at))))
        return
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit(INSTALL_HINT)
    server = PostgresServer(binaries, durable=True)
    server.start()
    figures = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for writers in (1, 4):
                sqlite = str(Path(folder) / f"bench-{writers}.sqlite3")
                postgres = server.create_database(f"bench_{writers}")
                for name, db in (("sqlite", sqlite), ("postgresql", postgres)):
                    asyncio.run(_migrate(db))
                    figures[f"{name}_{writers}_writers"] = run_writers(db, writers, args.seconds)
    finally:
        server.stop()
    base = figures["sqlite_1_writers"]["answers_per_s"]
    for name, f in figures.items():
        print(
            f"{name:<24} {f['answers_per_s']:7.1f} answers/s ({f['answers_per_s'] / base:.2f}x "
            f"SQLite, 1 writer); suggestion round trip p50 {f['round_trip_ms_p50']:.1f} ms, "
            f"p95 {f['round_trip_ms_p95']:.1f} ms; answer p50 {f['answer_ms_p50']:.1f} ms, "
            f"p95 {f['answer_ms_p95']:.1f} ms"
        )
    print(json.dumps({k: {m: round(v, 2) for m, v in f.items()} for k, f in figures.items()}))


async def _migrate(db: str) -> None:
    """Create and migrate the database once, before the writers race to open it."""
    await (await Store.open(db)).close()


if __name__ == "__main__":
    main()
