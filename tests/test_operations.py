"""Operating the bot: /healthz and /metrics, and SIGTERM in the middle of a burst."""

import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
import urllib.request

import pytest
import torch

from bot.core.service import HashtagService
from bot.store import Store
from inference.backends.choice import BATCHES, ENGINES
from inference.engine import InferenceEngine
from tests.bot_process import start_bot
from tests.corpus import jpeg
from tests.fake_telegram import TOKEN, FakeBotAPI
from tests.waiting import until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def http_get(url: str) -> tuple[int, str]:
    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await asyncio.to_thread(fetch)


@pytest.fixture
async def telegram():
    api = FakeBotAPI()
    await api.start()
    yield api
    await api.stop()


def start_telegram_bot(telegram: FakeBotAPI, tiny_clip_files, db, *options: str):
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram.url}
    return start_bot(tiny_clip_files, db, env, *options)


async def test_healthz_and_metrics(telegram, tiny_clip_files, tmp_path):
    port = free_port()
    bot = await start_telegram_bot(
        telegram, tiny_clip_files, tmp_path / "bot.sqlite3", "--metrics-port", str(port)
    )
    try:
        await telegram.wait_for("getUpdates", timeout=120)
        status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
        health = json.loads(body)
        serving = {key: health.pop(key) for key in ("engine", "batch_size")}
        assert health == {
            "healthy": True, "model": "loaded", "database": "writable", "telegram": "connected"
        }  # fmt: skip
        assert serving["engine"] in ENGINES and serving["batch_size"] in BATCHES  # measured
        await telegram.send_message(telegram.message(1, photo=telegram.add_photo(jpeg())))
        await telegram.wait_for("sendMessage")
        status, metrics = await http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert 'hashtag_photos_total{platform="telegram"} 1.0' in metrics
        for stage in ("download", "decode", "inference", "reply"):
            assert f'hashtag_stage_seconds_count{{stage="{stage}"}}' in metrics
        assert "hashtag_batch_size_count 1.0" in metrics and "hashtag_engine_pending 0.0" in metrics
        # On a CPU the zero-shot model is served from its export, and its version names the
        # engine chosen for this CPU (the one /healthz names).
        version = f"zero-shot:tiny-test-clip.json:tiny_clip.safetensors:{serving['engine']}"
        assert f'hashtag_suggestions_shown_total{{model_version="{version}"}} 1.0' in metrics
    finally:
        bot.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bot.communicate(), 60)
    assert bot.returncode == 0


async def test_sigterm_mid_burst_finishes_work_in_flight_and_loses_nothing(
    telegram, tiny_clip_files, tmp_path
):
    db = tmp_path / "bot.sqlite3"
    bot = await start_telegram_bot(telegram, tiny_clip_files, db)
    await telegram.wait_for("getUpdates", timeout=120)
    await telegram.send_message(telegram.message(1, photo=telegram.add_photo(jpeg(seed=0))))
    (reply,) = await telegram.wait_for("sendMessage")
    bot_message = telegram.result_of(reply)
    # A burst: own hashtags on the first photo, and photos from eight people at once.
    await telegram.send_message(
        telegram.message(1, text="#keep #these", reply_to_message=bot_message)
    )
    for person in range(2, 10):
        await telegram.send_message(
            telegram.message(person, photo=telegram.add_photo(jpeg(seed=person)))
        )
    await telegram.wait_for("download", 3)  # burst photos are being worked on
    bot.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(bot.communicate(), 60)
    assert bot.returncode == 0, output.decode()
    assert b"stopped cleanly" in output

    sent = [telegram.result_of(call) for call in telegram.calls_to("sendMessage")]
    acknowledged = [m for m in sent if m["text"].startswith("✅ Saved")]
    suggestions = [m for m in sent if "reply_markup" in m]
    with sqlite3.connect(db) as database:
        assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        attached = {row for row in database.execute("SELECT chat_id, message_id FROM suggestions")}
        saved = {tag for (tag,) in database.execute("SELECT tag FROM feedback")}
    # Every photo the bot had started on was answered before it exited...
    started = {call["file_id"] for call in telegram.calls_to("download")}
    assert len(suggestions) == len(started) >= 3
    # ...and every suggestion a person saw is on record, so reactions to it work after restart.
    assert {(str(m["chat"]["id"]), str(m["message_id"])) for m in suggestions} <= attached
    if acknowledged:  # every acknowledged "Saved" is stored
        assert {"keep", "these"} <= saved


async def test_bad_settings_stop_the_bot_before_anything_loads():
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN, "METRICS_PORT": "nine-thousand"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"--metrics-port: invalid int value: 'nine-thousand'" in err


async def test_telegram_webhook_mode_end_to_end(telegram, tiny_clip_files, tmp_path):
    """Updates POSTed to the bot's own port (as Telegram does), the secret token checked."""
    import aiohttp

    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-updates"
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": telegram.url,
        "TELEGRAM_WEBHOOK_SECRET": "s3cret-for-tests",
    }
    options = ("--telegram-webhook-url", url, "--telegram-webhook-port", str(port))
    bot = await start_bot(tiny_clip_files, tmp_path / "bot.sqlite3", env, *options)
    try:
        (registered,) = await telegram.wait_for("setWebhook", timeout=120)
        assert registered["url"] == url and registered["secret_token"] == "s3cret-for-tests"
        photo = telegram.message(1, photo=telegram.add_photo(jpeg()))
        async with aiohttp.ClientSession() as http:
            for secret, expected in (("wrong", 403), (None, 403), ("s3cret-for-tests", 200)):
                headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
                update = telegram.new_update(message=photo)
                async with http.post(url, json=update, headers=headers) as response:
                    assert response.status == expected, (secret, await response.text())
        (reply,) = await telegram.wait_for("sendMessage")  # only the update with the secret
        assert int(reply["chat_id"]) == 1 and "#" in reply["text"]
        assert not telegram.calls_to("getUpdates")  # no polling beside the webhook
    finally:
        bot.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(bot.communicate(), 60)
    assert bot.returncode == 0, output.decode()
    assert telegram.calls_to("deleteWebhook")  # removed on the way out
    assert b"s3cret-for-tests" not in output  # the secret is redacted from the logs


@pytest.mark.parametrize(
    ("refused", "told"),
    [
        ("telegram token", "TELEGRAM_BOT_TOKEN was rejected"),
        ("discord token", "DISCORD_BOT_TOKEN was rejected"),
        ("discord intent", "Discord refused the Message Content intent"),
    ],
)
async def test_what_a_platform_refuses_ends_the_bot_with_exit_2_and_what_to_do(
    refused, told, tiny_clip_files, tmp_path
):
    from tests.fake_discord import TOKEN as DISCORD_TOKEN
    from tests.fake_discord import FakeDiscord

    discord_fake, telegram_fake = FakeDiscord(privileged_intents=False), FakeBotAPI()
    await discord_fake.start()
    await telegram_fake.start()
    env = {
        "TELEGRAM_API_URL": telegram_fake.url,
        "DISCORD_API_URL": discord_fake.api_url,
        "DISCORD_GATEWAY_URL": discord_fake.gateway_url,
    }
    options: list[str] = []
    if refused == "telegram token":
        env["TELEGRAM_BOT_TOKEN"] = "111:wrong"
    elif refused == "discord token":
        env["DISCORD_BOT_TOKEN"] = "111:wrong"
    else:  # reading chosen channels needs the intent the portal has off
        env["DISCORD_BOT_TOKEN"] = DISCORD_TOKEN
        options = ["--discord-channels", "42"]
    try:
        process = await start_bot(tiny_clip_files, tmp_path / "bot.sqlite3", env, *options)
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await discord_fake.stop()
        await telegram_fake.stop()
    log = output.decode()
    assert process.returncode == 2, log
    assert told in log and "stopped cleanly" not in log
    assert "111:wrong" not in log and DISCORD_TOKEN not in log


async def test_background_work_that_fails_shows_in_healthz(tiny_model, tmp_path):
    from bot.operations.health import start_health_server
    from bot.operations.supervisor import Supervisor

    async def broken_learner():
        raise OSError("No space left on device")

    store = await Store.open(tmp_path / "bot.sqlite3")
    supervisor, port = Supervisor(), free_port()
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        service = HashtagService(engine, store)
        runner = await start_health_server(service, {}, "127.0.0.1", port, supervisor.failures)
        try:
            supervisor.start("learner", broken_learner(), essential=False)
            await until(lambda: "learner" in supervisor.failures, "the supervisor to notice")
            status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
            assert status == 503
            assert json.loads(body)["learner"] == "failed: OSError: No space left on device"
            assert not supervisor.failed.is_set()  # the bot goes on serving without it
        finally:
            await runner.cleanup()
            await supervisor.stop()
    await store.close()


def test_every_bot_setting_has_an_environment_equivalent(monkeypatch):
    from bot.cli import build_parser

    monkeypatch.setenv("HASHTAG_TOP_K", "5")
    monkeypatch.setenv("DISCORD_GUILD", "1234")
    args = build_parser().parse_args([])
    assert args.top_k == 5 and args.discord_guild == 1234


async def test_a_telegram_token_revoked_while_polling_stops_the_bot(
    telegram, tiny_clip_files, tmp_path
):
    bot = await start_telegram_bot(telegram, tiny_clip_files, tmp_path / "bot.sqlite3")
    try:
        await telegram.wait_for("getUpdates", timeout=120)
        telegram.fail_next("getUpdates", 401, description="Unauthorized")
        output, _ = await asyncio.wait_for(bot.communicate(), 60)
    finally:
        if bot.returncode is None:
            bot.kill()
            await bot.wait()
    log = output.decode()
    assert bot.returncode == 2, log
    assert "TELEGRAM_BOT_TOKEN was rejected" in log and "stopped cleanly" not in log
