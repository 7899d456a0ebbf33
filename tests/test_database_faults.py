"""A database that is damaged, missing, read-only or a folder: a clear word, never a traceback;
and /healthz says so, from what the store already knows, in milliseconds."""

import asyncio
import json
import os
import sqlite3
import sys
import time

import pytest
import torch

from bot.core.service import HashtagService, UserRef
from bot.store import Store, StoreUnavailable
from inference.engine import InferenceEngine
from tests.corpus import jpeg
from tests.fake_telegram import TOKEN, FakeBotAPI
from tests.test_operations import free_port, http_get
from tests.test_telegram import ALICE, send_photo


async def start_console(db, *options: str):
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--console", "--db", str(db), *options,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


def not_a_database(tmp_path):
    path = tmp_path / "bot.sqlite3"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    return path


@pytest.mark.parametrize(
    ("where", "told"),
    [
        (lambda tmp_path: tmp_path, "is a folder"),
        (lambda tmp_path: tmp_path / "no" / "such" / "bot.sqlite3", "does not exist"),
        (not_a_database, "is damaged (file is not a database)"),
    ],
    ids=["a folder", "a missing folder", "not a database"],
)
async def test_a_database_that_cannot_be_opened_is_one_line_with_what_to_do(where, told, tmp_path):
    db = where(tmp_path)
    console = await start_console(db)
    output, _ = await asyncio.wait_for(console.communicate(b""), 60)
    text = output.decode()
    assert console.returncode == 2, text
    assert told in text and str(db.parent) in text and "Traceback" not in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
async def test_a_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        console = await start_console(folder / "bot.sqlite3")
        output, _ = await asyncio.wait_for(console.communicate(b""), 60)
    finally:
        folder.chmod(0o700)
    assert console.returncode == 2 and "cannot write in" in output.decode()


async def a_database_with_answers(tiny_model, path) -> None:
    """What the bot itself writes: one person's photo and the hashtags they accepted."""
    store = await Store.open(path)
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        service = HashtagService(engine, store)
        alice = UserRef("telegram", str(ALICE))
        suggestion = await service.suggest(alice, [jpeg(seed=1)])
        await service.accept(alice, suggestion.id)
    await store.close()  # checkpoints the WAL into the file


def damage_table(path, table: str) -> None:
    """Overwrite the table's pages with noise, as a failing disk would."""
    with sqlite3.connect(path) as database:
        (root,) = database.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        page_size = database.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as file:
        file.seek((root[0] - 1) * page_size)
        file.write(os.urandom(page_size))


async def test_damaged_pages_get_a_clear_reply_and_show_in_healthz(
    tiny_model, tiny_clip_files, tmp_path
):
    db = tmp_path / "bot.sqlite3"
    await a_database_with_answers(tiny_model, db)
    damage_table(db, "users")
    fake, port = FakeBotAPI(), free_port()
    await fake.start()
    from tests.bot_process import start_bot

    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.url}
    bot = await start_bot(tiny_clip_files, db, env, "--metrics-port", str(port))
    try:
        await fake.wait_for("getUpdates", timeout=120)
        reply = await send_photo(fake)
        assert "database is damaged" in reply["text"] and "restore" in reply["text"]
        started = time.perf_counter()
        status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
        assert time.perf_counter() - started < 1.0
        assert status == 503 and "damaged" in json.loads(body)["database"]
    finally:
        bot.terminate()
        output, _ = await asyncio.wait_for(bot.communicate(), 60)
        await fake.stop()
    assert "Sorry, something went wrong" not in str(fake.calls_to("sendMessage"))
    assert "Traceback" not in output.decode()


async def test_healthz_answers_at_once_while_writes_queue(tiny_model, tmp_path):
    """Behind a long write (here: one holding SQLite's write lock from another process),
    /healthz answers from what it knows instead of queueing its own probe."""
    from bot.operations.health import start_health_server

    db = tmp_path / "bot.sqlite3"
    store = await Store.open(db, busy_timeout_ms=1000)
    blocker = sqlite3.connect(db, isolation_level=None, timeout=10, check_same_thread=False)
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        service, port = HashtagService(engine, store), free_port()
        runner = await start_health_server(service, {}, "127.0.0.1", port)
        try:
            await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")  # after the first probe
            writes = [asyncio.create_task(store.user_id("telegram", str(n))) for n in range(3)]
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
            assert time.perf_counter() - started < 0.5, "healthz waited for the write queue"
            assert status == 200 and json.loads(body)["database"] == "writable"
            outcomes = await asyncio.gather(*writes, return_exceptions=True)
            assert isinstance(outcomes[0], StoreUnavailable)  # the lock outlasted its wait
            status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
            assert status == 503 and "busy" in json.loads(body)["database"]
            blocker.execute("ROLLBACK")
            await store.user_id("telegram", "after")
            status, _ = await http_get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200  # a write that works clears it
        finally:
            blocker.close()
            await runner.cleanup()
    await store.close()


async def test_the_console_on_damaged_pages_says_so_and_goes_on(
    tiny_model, tiny_clip_files, tmp_path
):
    db, photo = tmp_path / "bot.sqlite3", tmp_path / "photo.jpg"
    await a_database_with_answers(tiny_model, db)
    damage_table(db, "users")
    photo.write_bytes(jpeg(seed=2))
    config_path, weights_path = tiny_clip_files
    console = await start_console(db, "--model", config_path, "--pretrained", weights_path)
    lines = f"{photo}\nhelp\nquit\n".encode()
    output, _ = await asyncio.wait_for(console.communicate(lines), 120)
    text = output.decode()
    assert console.returncode == 0, text
    assert "database is damaged" in text and "Traceback" not in text
    assert "top" in text.split("database is damaged")[1]  # `help` was still answered


async def test_a_damaged_row_is_explained_to_the_person(tiny_model, tmp_path):
    """A suggestion whose stored hashtags are damaged: answering it gets a plain message."""
    from tests.test_telegram import running_bot

    db = tmp_path / "bot.sqlite3"
    fake = FakeBotAPI()
    await fake.start()
    try:
        async with running_bot(fake, tiny_model, db):
            reply = await send_photo(fake)
            with sqlite3.connect(db) as database:
                database.execute("UPDATE suggestions SET shown = '[[\"beach\"'")
            message = fake.result_of(reply)
            await fake.send_message(fake.message(ALICE, text="#mine", reply_to_message=message))
            (*_, answer) = await fake.wait_for("sendMessage", 2)
    finally:
        await fake.stop()
    assert "damaged in my database" in answer["text"]


async def test_a_damaged_embedding_in_a_history_is_left_out_not_fatal(tiny_model, tmp_path, caplog):
    """One answered photo's embedding damaged: the person still gets suggestions and /tags,
    and the log names the row."""
    from tests.test_telegram import running_bot

    db = tmp_path / "bot.sqlite3"
    fake = FakeBotAPI()
    await fake.start()
    try:
        async with running_bot(fake, tiny_model, db):
            first = await send_photo(fake, seed=1)
            message = fake.result_of(first)
            await fake.send_message(fake.message(ALICE, text="#kept", reply_to_message=message))
            await fake.wait_for("sendMessage", 2)
            second = await send_photo(fake, seed=2)
            message = fake.result_of(second)
            await fake.send_message(fake.message(ALICE, text="#lunacat", reply_to_message=message))
            await fake.wait_for("sendMessage", 4)
        with sqlite3.connect(db) as database:
            database.execute("UPDATE suggestions SET embedding = x'00ff00' WHERE id = 1")
        fake.forget_updates()  # a restart: Telegram does not send what was confirmed again
        async with running_bot(fake, tiny_model, db):
            again = await send_photo(fake, seed=2)
            await fake.send_message(fake.message(ALICE, text="/tags"))
            (*_, tags) = await fake.wait_for("sendMessage", 6)
    finally:
        await fake.stop()
    assert again["text"].startswith("#") and "#lunacat" in again["text"].split()
    assert "#lunacat" in tags["text"]
    assert "suggestion 1" in caplog.text
