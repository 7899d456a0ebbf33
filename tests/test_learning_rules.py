"""Who may change the shared head: no one person outweighs the crowd, throwaway accounts do not
count, the operator's block list is a veto, and `python -m finetune community` shows it all."""

import asyncio
import time

import numpy as np
import pytest
import torch

from benchmarks.tagged_photos import tagged_photos
from bot.core.blocklist import BlockList, BlockListError
from bot.core.service import HashtagService, UserRef
from bot.store import Store
from finetune.cli import main as finetune_main
from finetune.feedback import FeedbackOptions, refit_head
from inference.engine import InferenceEngine
from tests.answers import answer
from tests.corpus import jpeg


def embeddings_of(model, photos) -> np.ndarray:
    transform = model.spec.eval_transform()
    pixels = torch.from_numpy(np.stack([transform(photo.image) for photo in photos]))
    with torch.no_grad():
        return model.embed(pixels).numpy()


def top(model, embeddings: np.ndarray, k: int) -> list[list[str]]:
    with torch.no_grad():
        logits = model.head(torch.from_numpy(embeddings)).numpy()
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[model.spec.vocabulary[i] for i in row] for row in order]


async def crowd(store, model, photos, embeddings, people: int, offset: int = 0):
    """`people` people answer len(photos) / people photos each with the hashtags they show."""
    for i, (photo, embedding) in enumerate(zip(photos, embeddings, strict=True)):
        await answer(store, model, f"crowd{offset + i % people}", embedding, list(photo.tags))


async def refit(store, model, **options):
    answered = await store.answered_photos(model.encoder_id)
    return refit_head(model, answered.photos, FeedbackOptions(**options), "test-base")


async def test_one_account_with_600_answers_cannot_move_the_head_for_everyone_else(
    tiny_model, tmp_path
):
    photos = tagged_photos(300 + 600 + 100, seed=3)
    vectors = embeddings_of(tiny_model, photos)
    honest = await Store.open(tmp_path / "honest.sqlite3")
    attacked = await Store.open(tmp_path / "attacked.sqlite3")
    try:
        for store in (honest, attacked):
            await crowd(store, tiny_model, photos[:300], vectors[:300], people=20)
        for embedding in vectors[300:900]:  # 30 minutes within the rate limit, every photo
            await answer(attacked, tiny_model, "attacker", embedding, ["artistic"])
        without = await refit(honest, tiny_model, min_days=1)
        with_attacker = await refit(attacked, tiny_model, min_days=1)
    finally:
        await honest.close()
        await attacked.close()
    assert with_attacker.passed
    unseen = vectors[900:]
    assert all("artistic" not in tags for tags in top(with_attacker.model, unseen, 5))
    firsts = [tags[0] for tags in top(with_attacker.model, unseen, 1)]
    honest_firsts = [tags[0] for tags in top(without.model, unseen, 1)]
    agreement = np.mean([a == b for a, b in zip(firsts, honest_firsts, strict=True)])
    assert agreement >= 0.9, agreement


async def test_accounts_made_today_do_not_count_towards_sharing(tiny_model, tmp_path, monkeypatch):
    photos = tagged_photos(60, seed=4)
    vectors = embeddings_of(tiny_model, photos)
    store = await Store.open(tmp_path / "bot.sqlite3")
    clock = [time.time() - 3 * 86400]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    try:
        # Five regulars answered yesterday and today; five new accounts only today.
        for day in range(2):
            for i, embedding in enumerate(vectors[day * 20 : day * 20 + 20]):
                await answer(store, tiny_model, f"regular{i % 5}", embedding, ["regularstag"])
            clock[0] += 86400
        for i, embedding in enumerate(vectors[40:]):
            await answer(store, tiny_model, f"sybil{i % 5}", embedding, ["buyourbrand"])
        result = await refit(store, tiny_model)  # the default: answers on 2 days
    finally:
        await store.close()
    assert "regularstag" in result.report["community_hashtags"]
    assert "buyourbrand" not in result.report["community_hashtags"]
    assert result.report["answers"]["people_counted"] == 5


async def test_a_blocked_hashtag_is_never_shared_nor_suggested(tiny_model, tmp_path):
    blocked_file = tmp_path / "blocked.txt"
    blocked_file.write_text("# ours\n#ourcrew\nlove\n")
    blocked = BlockList(blocked_file)
    photos = tagged_photos(40, seed=5)
    store = await Store.open(tmp_path / "bot.sqlite3")
    try:
        for i, embedding in enumerate(embeddings_of(tiny_model, photos)):
            await answer(store, tiny_model, f"p{i % 8}", embedding, ["ourcrew", "fine"])
        result = await refit(store, tiny_model, min_days=1, blocked=blocked.tags)
        assert result.report["community_hashtags"] == ["fine"]
        async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
            service = HashtagService(engine, store, rate_limit=None, blocked=blocked, top_k=997)
            suggestion = await service.suggest(UserRef("telegram", "p0"), [jpeg(seed=1)])
    finally:
        await store.close()
    shown = [tag for tag, _ in suggestion.tags]
    assert "love" not in shown and "ourcrew" not in shown and "fine" in shown  # p0's own tag
    assert len(shown) == 997 - 1 + 1  # every other candidate is still there


def test_a_block_list_that_is_not_text_is_refused_in_one_line(tmp_path):
    binary = tmp_path / "blocked.bin"
    binary.write_bytes(b"\x89PNG\r\n\x00\x00")
    with pytest.raises(BlockListError, match="not a text file of hashtags"):
        BlockList(binary)
    with pytest.raises(BlockListError, match="does not exist"):
        BlockList(tmp_path / "missing.txt")


async def test_the_community_listing_shows_who_used_what_and_block_adds_to_the_list(
    tiny_model, tmp_path, capsys
):
    db = tmp_path / "bot.sqlite3"
    store = await Store.open(db)
    for i, embedding in enumerate(embeddings_of(tiny_model, tagged_photos(60, seed=6))):
        tags = ["ourcrew"] + (["twofriends"] if i % 30 < 2 else [])
        await answer(store, tiny_model, f"p{i % 6}", embedding, tags)
    await store.close()
    blocked = tmp_path / "blocked.txt"
    assert (
        await asyncio.to_thread(finetune_main, ["community", "--db", str(db), "--min-days", "1"])
        == 0
    )
    listing = capsys.readouterr().out
    assert "#ourcrew" in listing.split("#twofriends")[0]  # most used first
    assert "shared" in next(line for line in listing.splitlines() if "#ourcrew" in line)
    assert "private: " in next(line for line in listing.splitlines() if "#twofriends" in line)
    assert (
        await asyncio.to_thread(
            finetune_main, ["community", "block", "ourcrew", "--blocked-hashtags", str(blocked)]
        )
        == 0
    )
    assert "added to" in capsys.readouterr().out
    assert "ourcrew" in BlockList(blocked) and "likeforlike" in BlockList(blocked)  # defaults kept
    command = ["community", "--db", str(db), "--min-days", "1", "--blocked-hashtags", str(blocked)]
    assert await asyncio.to_thread(finetune_main, command) == 0
    assert "blocked" in next(
        line for line in capsys.readouterr().out.splitlines() if "#ourcrew" in line
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.write_bytes(b""), "is empty"),
        (lambda path: path.write_bytes(b"not a database at all, just text" * 40), "cannot be read"),
        (lambda path: __import__("sqlite3").connect(path).execute("CREATE TABLE x (y)"), "not one"),
    ],
    ids=["empty", "not-sqlite", "foreign"],
)
def test_learning_explains_a_database_the_bot_did_not_write(tmp_path, capsys, make, message):
    db = tmp_path / "other.sqlite3"
    make(db)
    before = db.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        finetune_main(["feedback", "--db", str(db), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert db.read_bytes() == before  # never migrated into a bot database


def test_min_people_zero_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune_main(["community", "--min-people", "0"])
    assert exit_info.value.code == 2 and "at least 1" in capsys.readouterr().err
