"""Damaged rows in the bot's database, as `python -m finetune feedback` and `python -m finetune
community` meet them: each is left out, counted and named by its row id, and the round still
runs on the rest; only when too few usable rows remain is it a data error (exit 2).

The answers are written by the real store, the way the bot writes them; the only hand-made
part is the damage, one SQL UPDATE each.
"""

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.store import Store
from finetune.cli import main as finetune_main
from inference.loading import save_checkpoint
from tests.answers import Scene, answer, current_ranking

GOOD = 40  # answered photos that teach one lesson: enough to learn and to judge
DIM = 32  # what the tiny model's encoder makes

# What a careless hand or a broken disk leaves behind: (SQL with ? for the value and the
# suggestion id, value, what the line that names the row says).
SET_SUGGESTION = "UPDATE suggestions SET {} = ? WHERE id = ?"
DAMAGE = {
    "an embedding of another size": (
        SET_SUGGESTION.format("embedding"),
        np.ones(100, np.float16).tobytes(),
        "its embedding has 100 numbers where",  # the encoder makes 32 (community: the others have)
    ),
    "an odd byte count": (SET_SUGGESTION.format("embedding"), b"\x00" * 63, "not float16"),
    "a NaN embedding": (
        SET_SUGGESTION.format("embedding"),
        np.full(DIM, np.nan, np.float16).tobytes(),
        "NaN",
    ),
    "shown not JSON": (SET_SUGGESTION.format("shown"), "not json", "shown hashtags are damaged"),
    "shown not a list": (SET_SUGGESTION.format("shown"), '{"sea": 0.9}', "not a list"),
    "shown not a list of entries": (SET_SUGGESTION.format("shown"), "[1, 2]", "entry 1 is not"),
    "shown nested too deep": (
        SET_SUGGESTION.format("shown"),
        "[" * 100_000 + "]" * 100_000,
        "shown hashtags are damaged",
    ),
    "a time that is text": (SET_SUGGESTION.format("created_at"), "yesterday", "time is damaged"),
    "an infinite time": (SET_SUGGESTION.format("created_at"), float("inf"), "time is damaged"),
    "a hashtag that is a blob": (
        "UPDATE feedback SET tag = ? WHERE suggestion_id = ?",
        b"\xff",
        "an answer's hashtag is not text",
    ),
}


async def write_answers(db: Path, model, extra: int) -> list[int]:
    """Six people answer GOOD + `extra` photos of one scene with a hashtag the head ranks low (a
    lesson it can learn); the suggestion ids, oldest first."""
    store = await Store.open(db)
    try:
        rng, scene = np.random.default_rng(0), Scene.random(0)
        tag = current_ranking(model, scene.typical)[500]
        return [
            await answer(store, model, f"p{i % 6}", scene.photo(rng), [tag])
            for i in range(GOOD + extra)
        ]
    finally:
        await store.close()


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def damage(db: Path, sql: str, value, suggestion_ids: list[int]) -> None:
    with sqlite3.connect(db) as connection:
        connection.executemany(sql, [(value, i) for i in suggestion_ids])


@pytest.fixture(scope="module")
def one_extra(tiny_model, tmp_path_factory) -> tuple[Path, int, Path]:
    """(a database with GOOD answers and one more, that one's id, the served checkpoint)."""
    folder = tmp_path_factory.mktemp("damaged")
    db = folder / "bot.sqlite3"
    extra = asyncio.run(write_answers(db, tiny_model, extra=1))[-1]
    save_checkpoint(tiny_model, folder / "live")
    return db, extra, folder / "live"


def feedback(db: Path, checkpoint: Path, out: Path) -> int:
    command = ["--db", str(db), "--checkpoint", str(checkpoint), "--out", str(out)]
    return finetune_main(["feedback", *command, "--min-days", "1"])


@pytest.mark.parametrize("fault", DAMAGE)
def test_a_damaged_row_is_named_and_left_out_and_the_round_runs(one_extra, fault, tmp_path, capsys):
    original, photo, checkpoint = one_extra
    db = tmp_path / "bot.sqlite3"
    shutil.copy(original, db)
    sql, value, says = DAMAGE[fault]
    damage(db, sql, value, [photo])

    assert feedback(db, checkpoint, tmp_path / "learned") == 0  # the GOOD answers teach
    printed = capsys.readouterr()
    (warning,) = warnings_in(printed.err)
    assert warning.startswith(f"warning: left out suggestion {photo}: ") and says in warning
    assert f"answers: {GOOD} answered photos" in printed.out and "1 damaged)" in printed.out
    report = json.loads((tmp_path / "learned" / "metrics.json").read_text())
    assert report["answers"]["used"] == GOOD and report["answers"]["damaged"] == 1

    assert finetune_main(["community", "--db", str(db), "--min-days", "1"]) == 0
    printed = capsys.readouterr()
    (warning,) = warnings_in(printed.err)
    assert warning.startswith(f"warning: left out suggestion {photo}: ") and says in warning
    assert printed.out.startswith("hashtag")


def test_rows_of_another_size_outnumbering_the_good_ones_are_the_damaged_ones(tiny_model, tmp_path):
    db = tmp_path / "bot.sqlite3"
    wrong = asyncio.run(write_answers(db, tiny_model, extra=GOOD + 5))[GOOD:]
    rng = np.random.default_rng(1)
    with sqlite3.connect(db) as connection:  # each different, so they would split and train
        connection.executemany(
            SET_SUGGESTION.format("embedding"),
            [(rng.normal(size=100).astype(np.float16).tobytes(), i) for i in wrong],
        )
    save_checkpoint(tiny_model, tmp_path / "live")
    command = ["--db", str(db), "--checkpoint", str(tmp_path / "live"), "--min-days", "1"]
    run = subprocess.run(  # the entry point an operator and --learn-every run
        [sys.executable, "-m", "finetune", "feedback", *command, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in run.stderr
    assert run.returncode == 0, run.stderr
    assert warnings_in(run.stderr) == [
        *(f"warning: left out suggestion {i}: its embedding has 100 numbers where the encoder "
          f"makes {DIM}" for i in wrong[:5]),
        f"warning: {len(wrong) - 5} more damaged rows left out",
    ]  # fmt: skip
    assert f"answers: {GOOD} answered photos" in run.stdout


def test_when_too_few_rows_are_readable_each_is_named_before_the_error(
    tiny_model, tmp_path, capsys
):
    db = tmp_path / "bot.sqlite3"
    photos = asyncio.run(write_answers(db, tiny_model, extra=3))
    damage(db, SET_SUGGESTION.format("shown"), "not json", photos[:GOOD])
    save_checkpoint(tiny_model, tmp_path / "live")

    assert feedback(db, tmp_path / "live", tmp_path / "out") == 2  # a data error, as documented
    said = capsys.readouterr().err.strip().splitlines()
    assert said[:5] == [
        f"warning: left out suggestion {i}: its shown hashtags are damaged "
        "(Expecting value: line 1 column 1 (char 0))"
        for i in photos[:5]
    ]
    assert said[5] == f"warning: {GOOD - 5} more damaged rows left out"
    # The last line is the reason: what the bot's --learn-every logs of a round that cannot learn.
    assert said[-1] == (
        f"error: {len(photos) - GOOD} answered photos made with this encoder; at least 20 are "
        "needed to learn from them and check the result"
    )
