"""`python -m bot --console`: the whole loop in a terminal, on the real core and database."""

import asyncio
import sys

import pytest
import torch

from bot.adapters.console import CONSOLE_HELP, NO_PHOTO_YET, NOT_NUMBERS, NUL_IN_PATH, run_console
from bot.cli import main as bot_main
from bot.core import messages
from bot.core.i18n import ENGLISH, texts
from bot.core.messages import SOMETHING_WENT_WRONG
from bot.core.service import DEFAULT_TOP_K, HashtagService
from bot.store import Store
from bot.store.records import StoreUnavailable
from inference.engine import InferenceEngine
from tests.corpus import jpeg


async def converse(service, lines: list[str]) -> list[str]:
    """Feed `lines` as the person's input; returns everything the console wrote."""
    pending, written = list(lines), []

    async def read_line(prompt: str) -> str:
        if not pending:
            raise EOFError
        return pending.pop(0)

    await run_console(service, read_line, written.append)
    return written


@pytest.fixture
async def service(tiny_model, tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        yield HashtagService(engine, store)
    await store.close()


async def test_the_whole_loop_works_in_a_terminal(service, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(seed=3))
    out = await converse(
        service,
        [str(photo), "y 1 2", "#mycatluna", "top", str(photo), "n", "quit", "never read"],
    )
    suggestion = out[1].split()
    assert len(suggestion) == DEFAULT_TOP_K and all(tag.startswith("#") for tag in suggestion)
    assert out[3] == f"✅ Saved: {' '.join(suggestion[:2])}"
    assert out[4] == "✅ Saved: #mycatluna"
    assert "#mycatluna (1)" in out[5]
    assert "#mycatluna" in out[6].split()  # personalised on the next photo
    assert out[8].startswith("👎 Noted")


async def test_bad_input_gets_a_message_not_a_crash(service, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    out = await converse(service, [str(tmp_path / "missing.jpg"), str(tmp_path / "notes.txt"), "y"])
    assert out[1] == "No such file."
    assert "not an image" in out[2]
    assert out[3] == NO_PHOTO_YET


async def test_odd_numbers_and_a_nul_in_a_path_get_a_message_not_a_crash(service, tmp_path):
    """'²' passes str.isdigit but not int(); a NUL byte makes Path.stat() raise ValueError."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(seed=3))
    out = await converse(
        service, [str(photo), "y ²", "y 1 ٣", "y 1x", "y 9999999999", f"{photo}\0.jpg", "y 2"]
    )
    tags = out[1].split()
    assert out[3:8] == [NOT_NUMBERS, NOT_NUMBERS, NOT_NUMBERS, NOT_NUMBERS, NUL_IN_PATH]
    assert out[8] == f"✅ Saved: {tags[1]}"  # the same suggestion, still answerable


class FailingOnce:
    """Wraps a store method: the first call raises `error`, later calls go through."""

    def __init__(self, method, error: Exception):
        self.method, self.error = method, error

    async def __call__(self, *args, **kwargs):
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await self.method(*args, **kwargs)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (StoreUnavailable("The database file is damaged: restore it from a backup."), None),
        (RuntimeError("a bug of ours"), SOMETHING_WENT_WRONG),
    ],
)
async def test_a_failure_on_one_line_is_a_message_and_the_console_goes_on(
    service, tmp_path, monkeypatch, caplog, error, said
):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(seed=3))
    monkeypatch.setattr(service, "top_hashtags", FailingOnce(service.top_hashtags, error))
    out = await converse(service, ["top", str(photo), "y 1"])
    assert out[1] == (said or messages.for_error(ENGLISH, error))
    assert said or str(error) in out[1]
    assert out[4].startswith("✅ Saved: #")  # the lines after it were answered
    unexpected = [record for record in caplog.records if record.levelname == "ERROR"]
    assert bool(unexpected) == (said is not None)  # a bug is logged for the operator


async def test_a_scripted_console_session_runs_at_full_speed(tiny_clip_files, tmp_path):
    """The console is the operator's own terminal: no per-person rate limit (a chat platform
    would refuse the 9th photo of this burst)."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(seed=5))
    script = "".join(f"{photo}\ny\n" for _ in range(60)) + "quit\n"
    config_path, weights_path = tiny_clip_files
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--console", "--model", config_path, "--pretrained",
        weights_path, "--device", "cpu", "--db", str(tmp_path / "bot.sqlite3"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(script.encode()), 300)
    text = out.decode()
    assert process.returncode == 0, text
    assert text.count("✅ Saved: #") == 60 and "Too many" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate-per-minute", "0"], "--rate-per-minute must be positive"),
        (["--rate-burst", "many"], "invalid int value"),
        (["--learn-every", "-1"], "--learn-every takes a positive number"),
        (["--discord-shards", "0-1"], "go together"),
        (["--discord-shards", "2-4", "--discord-shard-count", "4"], "between 0 and 3"),
        (["--discord-shards", "a-b", "--discord-shard-count", "4"], "like 0-3 or 0,2,5"),
        (["--telegram-webhook-url", "bot.example.com"], "takes a full URL"),
        (
            ["--db", "postgresql://u@h/db", "--learn-every", "1"],
            "with a PostgreSQL --db, give --learned-checkpoint",
        ),
        (["--top-k", "0"], "--top-k takes 1 to 100"),
        (["--watch-interval", "0"], "--watch-interval must be positive"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout not negative"),
        (["--min-people", "0"], "--min-people and --min-days must be at least 1"),
        (["--blocked-hashtags", "/no/such/file"], "does not exist"),
    ],
)
def test_bad_settings_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bot_main(["--console", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_shard_ranges():
    from bot.cli import shard_range

    assert shard_range("0-3") == [0, 1, 2, 3]
    assert shard_range("5") == [5]
    assert shard_range("4, 0-1,4") == [0, 1, 4]


async def test_the_chat_apps_words_work_in_the_terminal_too(service, tmp_path, monkeypatch):
    monkeypatch.setenv("LANG", "C.UTF-8")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(seed=3))
    out = await converse(service, ["/help", "/tags", "/count 3", "/count 99", str(photo), "quit"])
    assert out[1] == out[0]  # /help is the console's help
    assert out[2] == messages.NO_HISTORY
    assert out[3] == messages.count_set(ENGLISH, 3)
    assert out[4] == messages.count_usage(ENGLISH, 3)
    shown = out[5].split()
    assert len(shown) == 3
    out = await converse(service, [f"/hide {shown[0]}", "/hidden", str(photo), "/nonsense", "quit"])
    assert out[1] == messages.hidden_now(ENGLISH, [shown[0].lstrip("#")])
    assert out[2] == messages.hidden_list(ENGLISH, [shown[0].lstrip("#")])
    assert shown[0] not in out[3].split() and len(out[3].split()) == 3
    assert out[5] == messages.UNKNOWN_COMMAND
    out = await converse(service, ["/language", "/settings", "quit"])
    assert out[1].startswith(messages.CHOOSE_LANGUAGE) and "/language es" in out[1]
    assert "/language auto" in out[1] and "/count 30" in out[2]


async def test_the_terminal_speaks_its_language(service, monkeypatch):
    monkeypatch.setenv("LANG", "it_IT.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    out = await converse(service, ["/count 4", "quit"])
    italian = texts("it")
    assert out[0] == italian._(CONSOLE_HELP) != CONSOLE_HELP
    assert out[1] == messages.count_set(italian, 4)
