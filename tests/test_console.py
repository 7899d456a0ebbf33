"""`python -m bot --console`: the whole loop in a terminal, on the real core and database."""

import pytest
import torch

from bot.console import NO_PHOTO_YET, run_console
from bot.service import HashtagService
from bot.store import Store
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
    assert len(suggestion) == 10 and all(tag.startswith("#") for tag in suggestion)
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
