"""No secret reaches the screen: not in logs, not in a traceback at start, not in an error."""

import asyncio
import os
import subprocess
import sys

import pytest

from tests.bot_process import start_bot
from tests.fake_telegram import TOKEN, FakeBotAPI
from tests.test_operations import free_port


@pytest.mark.parametrize(
    ("api_url", "told", "code"),
    [
        ("{fake}/not-the-bot-api", "TELEGRAM_API_URL", 2),  # a 404: PTB calls it InvalidToken
        ("http://127.0.0.1:{closed}", "cannot reach Telegram", 1),
    ],
)
async def test_a_wrong_telegram_api_url_says_so_without_the_token(
    api_url, told, code, tiny_clip_files, tmp_path
):
    fake = FakeBotAPI()
    await fake.start()
    url = api_url.format(fake=fake.url, closed=free_port())
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": url}
    try:
        process = await start_bot(tiny_clip_files, tmp_path / "bot.sqlite3", env)
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await fake.stop()
    log = output.decode()
    assert process.returncode == code, log
    assert told in log and "Traceback" not in log
    assert TOKEN not in log and TOKEN.split(":")[1] not in log


CRASH_AT_START = """
import os, sys, warnings
import bot.cli

async def crash(*args):
    token = os.environ["TELEGRAM_BOT_TOKEN"]
    print("printed:", token)
    warnings.warn(f"warned: {token}")
    raise RuntimeError(f"a library quoting its token: {token}")

bot.cli.run = crash
sys.exit(bot.cli.main(["--db", sys.argv[1]]))
"""


def test_a_crash_at_start_shows_no_secret_anywhere(tmp_path):
    """Whatever reaches stdout or stderr (a print, a warning, an uncaught traceback), the
    tokens and the database password are replaced."""
    password = "pg-pass-for-tests"
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "DISCORD_BOT_TOKEN": "discord-token-for-tests",
        "PATH": os.environ["PATH"],
    }
    db = f"postgresql://bot:{password}@127.0.0.1:1/bot"
    result = subprocess.run(
        [sys.executable, "-c", CRASH_AT_START, db], env=env, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "printed: [redacted]" in output and "warned: [redacted]" in output
    assert "a library quoting its token: [redacted]" in output  # the traceback, redacted
    for secret in (TOKEN, "discord-token-for-tests", password):
        assert secret not in output
