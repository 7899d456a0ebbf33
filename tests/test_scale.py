"""Several bot processes on one PostgreSQL database at once: four running the core
(tests/scale_worker.py), and two real `python -m bot` processes splitting Discord's shards."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from bot.store import Store
from tests.bot_process import start_bot
from tests.corpus import jpeg
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


async def test_two_processes_split_the_discord_shards(postgres_url, tiny_clip_files, tmp_path):
    """`--discord-shards 0-1` and `2-3` of 4: each process connects its own shards, reports
    them in /healthz, and answers exactly the servers on them; both share one database."""
    from tests.fake_discord import BOT, BOT_ID, TOKEN, FakeDiscord, shard_of
    from tests.test_operations import free_port, http_get

    guilds = {(shard << 22) | 4_000_100: 4_000_200 + shard for shard in range(4)}
    assert [shard_of(guild, 4) for guild in guilds] == [0, 1, 2, 3]
    fake = FakeDiscord(guilds=guilds)
    await fake.start()
    env = {
        "DISCORD_BOT_TOKEN": TOKEN,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    }
    ports, bots = [free_port(), free_port()], []
    try:
        for shards, port in zip(("0-1", "2-3"), ports, strict=True):
            options = ("--discord-shards", shards, "--discord-shard-count", "4")
            bots.append(
                await start_bot(
                    tiny_clip_files, postgres_url, env, *options, "--metrics-port", str(port)
                )
            )
        for _ in range(100):
            if len(set(fake.identified)) == 4:
                break
            await asyncio.sleep(0.2)
        assert sorted(set(fake.identified)) == [(0, 4), (1, 4), (2, 4), (3, 4)]
        for port, shards in zip(ports, ((0, 1), (2, 3)), strict=True):
            for _ in range(100):
                status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
                if status == 200:
                    break
                await asyncio.sleep(0.2)
            health = json.loads(body)
            assert health["healthy"], health
            assert [key for key in health if key.startswith("discord_shard_")] == [
                f"discord_shard_{shard}" for shard in shards
            ]
        for seed, guild in enumerate(guilds):
            photo = fake.attachment(jpeg(seed=seed))
            message = fake.message(
                1, guild=guild, content=f"<@{BOT_ID}>", mentions=[BOT], attachments=[photo]
            )
            await fake.send_message(message)
        await fake.wait_for("POST", "/messages", len(guilds), timeout=120)
        await asyncio.sleep(1)  # a second reply to any of them would come now
        replied = sorted(
            int(call.path.split("/")[2])
            for call in fake.calls_to("POST", "/messages")
            if call.path.startswith("/channels/")
        )
        assert replied == sorted(guilds.values())  # each server answered once, by its shard
    finally:
        for bot in bots:
            bot.send_signal(signal.SIGTERM)
        outputs = [await asyncio.wait_for(bot.communicate(), 60) for bot in bots]
        await fake.stop()
    for bot, (output, _) in zip(bots, outputs, strict=True):
        assert bot.returncode == 0, output.decode()
    store = await Store.open(postgres_url)
    async with store._reading() as db:
        ((suggestions,),) = await db.fetch("SELECT COUNT(*) FROM suggestions")
    await store.close()
    assert suggestions == len(guilds)
