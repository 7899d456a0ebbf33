"""The Telegram bot end to end: the real PTB Application against a fake Bot API on 127.0.0.1."""

import asyncio
import contextlib
import logging
import os
import signal
import sys

import pytest
import torch

from bot.adapters.telegram_bot import (
    ALLOWED_UPDATES,
    SEND_RETRIES,
    build_application,
    smallest_photo_at_least,
)
from bot.core import messages
from bot.core.i18n import ENGLISH, texts
from bot.core.ratelimit import RateLimit
from bot.core.service import DEFAULT_TOP_K, HashtagService, UserRef
from bot.store import PersonSettings, Store
from inference.engine import InferenceEngine
from tests.bot_process import start_bot
from tests.corpus import jpeg
from tests.fake_telegram import TOKEN, FakeBotAPI
from tests.waiting import until

ALICE, BOB = 100, 200


@pytest.fixture
async def fake():
    api = FakeBotAPI()
    await api.start()
    yield api
    await api.stop()


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeBotAPI, tiny_model, db_path, contact: str | None = None, **service_options
):
    """The bot as `python -m bot` runs it, on the tiny model, polling the fake API;
    `contact`: its --privacy-contact."""
    store = await Store.open(db_path)
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        service = HashtagService(engine, store, **service_options)
        fake.store = store  # lets send_photo see when a reply has been recorded
        application = build_application(service, TOKEN, fake.url, contact)
        async with application:
            await application.start()
            await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
            try:
                yield service
            finally:
                await application.updater.stop()
                await application.stop()
    await store.close()


@pytest.fixture
async def bot(fake, tiny_model, tmp_path):
    async with running_bot(fake, tiny_model, tmp_path / "bot.sqlite3") as service:
        yield service


async def send_photo(fake: FakeBotAPI, user=ALICE, seed=0, replies=1, **message) -> dict:
    """Send a photo and wait for the bot's reply; returns the reply's sendMessage call.

    Also waits until the bot has stored which message carries the suggestion: it can only
    do so once the API answered, and a person cannot react to a message they have not seen.
    """
    already = len(fake.calls_to("sendMessage"))
    photo = fake.add_photo(jpeg(seed=seed))
    await fake.send_message(fake.message(user, photo=photo, **message))
    reply = (await fake.wait_for("sendMessage", already + replies))[-1]
    store = getattr(fake, "store", None)  # absent when the bot runs in a subprocess
    if store and "reply_markup" in reply:
        sent = fake.result_of(reply)
        chat, message_id = str(sent["chat"]["id"]), str(sent["message_id"])
        await until(
            lambda: store.suggestion_for_reply("telegram", chat, message_id),
            "the bot to store which message carries its suggestion",
        )
    return reply


async def processed(fake: FakeBotAPI, service: HashtagService, chat_id=ALICE, **chat) -> None:
    """Wait until the bot has handled every update sent so far: a /help sent after them is
    answered, and nothing is in flight any more."""
    already = len(fake.calls_to("sendMessage"))
    await fake.send_message(fake.message(ALICE, chat_id=chat_id, text="/help", **chat))
    await fake.wait_for("sendMessage", already + 1)
    await until(lambda: service.idle, "the bot to finish the work in flight")


def suggestions(fake: FakeBotAPI) -> list[dict]:
    return [call for call in fake.calls_to("sendMessage") if call["text"].startswith("#")]


def suggestion_id(reply: dict) -> str:
    return reply["reply_markup"]["inline_keyboard"][-1][0]["callback_data"].split("|")[1]


async def test_a_photo_gets_copyable_hashtags_and_a_keyboard(fake, bot):
    reply = await send_photo(fake)
    tags = reply["text"].split()
    assert len(tags) == DEFAULT_TOP_K and all(tag.startswith("#") for tag in tags)
    keyboard = reply["reply_markup"]["inline_keyboard"]
    save, hide, copy = keyboard[-1]
    assert save["callback_data"].startswith("save|") and hide["callback_data"].startswith("hide|")
    assert copy["copy_text"]["text"] == reply["text"]  # one tap copies the hashtag line
    assert sum(len(row) for row in keyboard[:-1]) == DEFAULT_TOP_K
    # The smallest size still >= the model's 32 px input was downloaded, not the largest.
    (download,) = fake.calls_to("download")
    assert download["file_id"].endswith("90x68")
    # Reactions only reach bots that ask for them.
    assert "message_reaction" in fake.calls_to("getUpdates")[0]["allowed_updates"]
    assert "reply_parameters" in reply or "reply_to_message_id" in reply


async def test_thumbs_up_reaction_saves_every_shown_tag_and_undo_removes_them(fake, bot):
    reply = await send_photo(fake)
    message_id = fake.result_of(reply)["message_id"]
    await fake.react(ALICE, ALICE, message_id, old=[], new=["👍"])
    await fake.wait_for("setMessageReaction")
    shown = [tag.lstrip("#") for tag in reply["text"].split()]
    assert sorted(t for t, _ in await bot.top_hashtags(UserRef("telegram", str(ALICE)))) == sorted(
        shown
    )
    await fake.react(ALICE, ALICE, message_id, old=["👍"], new=[])
    await fake.wait_for("setMessageReaction", 2)
    assert await bot.top_hashtags(UserRef("telegram", str(ALICE))) == []


async def test_buttons_untick_a_tag_and_save_the_rest(fake, bot):
    reply = await send_photo(fake)
    message = fake.result_of(reply)
    await fake.press(ALICE, message, f"toggle|{suggestion_id(reply)}|0")
    (edit,) = await fake.wait_for("editMessageReplyMarkup")
    message["reply_markup"] = edit["reply_markup"]
    await fake.press(ALICE, message, f"save|{suggestion_id(reply)}")
    (saved,) = await fake.wait_for("editMessageText")
    shown = [tag.lstrip("#") for tag in reply["text"].split()]
    assert "Saved" in saved["text"] and f"#{shown[0]}" not in saved["text"].split("Saved:")[1]
    stored = {tag for tag, _ in await bot.top_hashtags(UserRef("telegram", str(ALICE)))}
    assert stored == set(shown[1:])


async def test_own_hashtags_reply_is_stored_and_personalises_the_next_photo(
    fake, bot, tiny_model, tmp_path
):
    reply = await send_photo(fake, seed=3)
    bot_message = fake.result_of(reply)
    await fake.send_message(
        fake.message(ALICE, text="mine: #MyCatLuna", reply_to_message=bot_message)
    )
    (*_, ack) = await fake.wait_for("sendMessage", 2)
    assert ack["text"] == messages.saved(ENGLISH, ["mycatluna"])
    again = await send_photo(fake, seed=3)
    assert "#mycatluna" in again["text"].split()


async def test_a_restart_keeps_every_accepted_tag(fake, tiny_model, tmp_path):
    db = tmp_path / "bot.sqlite3"
    async with running_bot(fake, tiny_model, db):
        reply = await send_photo(fake, seed=4)
        bot_message = fake.result_of(reply)
        await fake.send_message(fake.message(ALICE, text="#keepme", reply_to_message=bot_message))
        await fake.wait_for("sendMessage", 2)
    async with running_bot(fake, tiny_model, db) as service:
        assert ("keepme", 1) in await service.top_hashtags(UserRef("telegram", str(ALICE)))
        again = await send_photo(fake, seed=4)
        assert "#keepme" in again["text"].split()


async def test_an_album_gets_one_reply(fake, bot):
    for seed in range(3):
        photo = fake.add_photo(jpeg(seed=10 + seed))
        await fake.send_message(fake.message(ALICE, photo=photo, media_group_id="album-1"))
    await fake.wait_for("sendMessage")
    await processed(fake, bot)
    assert len(suggestions(fake)) == 1
    assert len(fake.calls_to("download")) == 3


async def test_in_a_group_only_the_author_can_accept(fake, bot):
    group = -4242
    reply = await send_photo(fake, chat_id=group, chat_type="group", caption="/tags")
    message = fake.result_of(reply)
    await fake.react(BOB, group, message["message_id"], old=[], new=["👍"])
    (_, notice) = await fake.wait_for("sendMessage", 2)
    assert notice["text"] == messages.ONLY_THE_AUTHOR
    await fake.press(BOB, message, f"save|{suggestion_id(reply)}")
    (answer,) = await fake.wait_for("answerCallbackQuery")
    assert answer["text"] == messages.ONLY_THE_AUTHOR
    for person in (ALICE, BOB):
        assert await bot.top_hashtags(UserRef("telegram", str(person))) == []
    # Group photos without /tags are left alone (privacy mode style).
    await fake.send_message(
        fake.message(ALICE, chat_id=group, chat_type="group", photo=fake.add_photo(jpeg()))
    )
    await processed(fake, bot, chat_id=group, chat_type="group")
    assert len(suggestions(fake)) == 1


async def test_hostile_and_oversized_files_get_a_clear_reply(fake, bot):
    bad = fake.add_document(b"this is not an image at all", "image/jpeg")
    await fake.send_message(fake.message(ALICE, document=bad))
    (reply,) = await fake.wait_for("sendMessage")
    assert "not an image" in reply["text"]
    huge = fake.add_document(b"x", "image/png", file_size=50 * 1024 * 1024)
    await fake.send_message(fake.message(ALICE, document=huge))
    (_, reply) = await fake.wait_for("sendMessage", 2)
    assert "limit is 20 MB" in reply["text"]
    assert huge["file_id"] not in [call["file_id"] for call in fake.calls_to("getFile")]


async def test_stickers_text_and_unknown_commands_get_a_helpful_reply(fake, bot):
    sticker = {"file_id": "s1", "file_unique_id": "s1", "width": 512, "height": 512,
               "is_animated": False, "is_video": False, "type": "regular"}  # fmt: skip
    await fake.send_message(fake.message(ALICE, sticker=sticker))
    await fake.send_message(fake.message(ALICE, text="hello?"))
    await fake.send_message(fake.message(ALICE, text="/frobnicate"))
    await fake.send_message(fake.message(ALICE, text="/start"))
    await fake.send_message(fake.message(ALICE, text="/help"))
    replies = [call["text"] for call in await fake.wait_for("sendMessage", 5)]
    assert replies.count(messages.not_a_photo(ENGLISH)) == 2 and messages.UNKNOWN_COMMAND in replies
    assert messages.start(ENGLISH) in replies and messages.HELP in replies


async def test_a_429_is_waited_out_and_retried(fake, bot):
    fake.fail_next(
        "sendMessage", 429, description="Too Many Requests: retry after 1", retry_after=1
    )
    reply = await send_photo(fake, replies=2)  # the refused attempt, then the real one
    assert reply["text"].startswith("#")


async def test_a_bad_gateway_is_retried(fake, bot):
    fake.fail_next("sendMessage", 502, description="Bad Gateway")
    reply = await send_photo(fake, replies=2)
    assert reply["text"].startswith("#")


async def test_forget_asks_first_then_deletes_everything(fake, bot):
    reply = await send_photo(fake)
    message_id = fake.result_of(reply)["message_id"]
    await fake.react(ALICE, ALICE, message_id, old=[], new=["👍"])
    await fake.wait_for("setMessageReaction")
    await fake.send_message(fake.message(ALICE, text="/forget"))
    (_, confirm) = await fake.wait_for("sendMessage", 2)
    assert confirm["text"] == messages.FORGET_CONFIRM
    await fake.press(ALICE, fake.result_of(confirm), f"forget|yes|{ALICE}")
    (done,) = await fake.wait_for("editMessageText")
    assert done["text"] == messages.FORGOTTEN
    assert await bot.top_hashtags(UserRef("telegram", str(ALICE))) == []


def test_smallest_sufficient_photo_size_is_chosen():
    from telegram import PhotoSize

    sizes = tuple(PhotoSize(f"{w}", f"{w}", w, h) for w, h in ((90, 60), (320, 240), (800, 600)))
    assert smallest_photo_at_least(sizes, 224).width == 320
    assert smallest_photo_at_least(sizes, 1000).width == 800  # nothing is big enough: largest


async def test_python_dash_m_bot_runs_stops_on_sigterm_and_never_logs_the_token(
    fake, tiny_clip_files, tmp_path
):
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.url, "LOG_LEVEL": "DEBUG"}
    process = await start_bot(tiny_clip_files, tmp_path / "bot.sqlite3", env)
    try:
        await fake.wait_for("getUpdates", timeout=120)
        reply = await send_photo(fake)
        assert reply["text"].startswith("#")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    log = output.decode()
    assert process.returncode == 0, log
    assert TOKEN not in log and TOKEN.split(":")[1] not in log
    assert "getUpdates" in log or "running" in log  # it did log, at DEBUG


async def test_no_token_exits_with_how_to_set_one():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BOT_TOKEN")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert b"TELEGRAM_BOT_TOKEN" in err and b"--console" in err and b"BotFather" in err


async def test_tags_as_a_reply_suggests_for_whoever_asked(fake, tiny_model, tmp_path):
    """Bob asking about Alice's photo writes nothing of Alice's and spends only his limit."""
    group = -777
    one_photo_each = RateLimit(per_minute=1, burst=1)
    async with running_bot(fake, tiny_model, tmp_path / "bot.sqlite3", rate_limit=one_photo_each):
        alices = await fake.send_message(
            fake.message(ALICE, chat_id=group, chat_type="group", caption="#alicesown",
                         photo=fake.add_photo(jpeg(seed=5)))
        )  # fmt: skip
        reply = await send_photo(
            fake, BOB, chat_id=group, chat_type="group", text="/tags", reply_to_message=alices
        )
        message = fake.result_of(reply)
        await fake.press(ALICE, message, f"save|{suggestion_id(reply)}")
        (refused,) = await fake.wait_for("answerCallbackQuery")
        assert refused["text"] == messages.ONLY_THE_AUTHOR
        await fake.press(BOB, message, f"save|{suggestion_id(reply)}")
        (saved,) = await fake.wait_for("editMessageText")
        assert "Saved" in saved["text"]
        alice_private = await send_photo(fake, ALICE, seed=6)  # her limit is untouched
        assert alice_private["text"].startswith("#")
        service = fake.store  # the bot's own database
        alice = await service.find_user_id("telegram", str(ALICE))
        assert (await service.user_history(alice)).photos == 0  # her caption is not an answer
        bob = await service.find_user_id("telegram", str(BOB))
        bobs = {tag for verdicts in (await service.user_history(bob)).verdicts for tag in verdicts}
        assert len(bobs) == DEFAULT_TOP_K and "alicesown" not in bobs


async def test_a_forget_prompt_answers_only_the_person_who_asked(fake, bot):
    reply = await send_photo(fake, BOB)
    await fake.react(BOB, BOB, fake.result_of(reply)["message_id"], old=[], new=["👍"])
    await fake.wait_for("setMessageReaction")
    group = -4343
    await fake.send_message(fake.message(ALICE, chat_id=group, chat_type="group", text="/forget"))
    (_, prompt) = await fake.wait_for("sendMessage", 2)
    assert prompt["text"] == messages.FORGET_CONFIRM
    await fake.press(BOB, fake.result_of(prompt), f"forget|yes|{ALICE}")
    (answer,) = await fake.wait_for("answerCallbackQuery")
    assert answer["text"] == messages.ONLY_WHO_ASKED and not fake.calls_to("editMessageText")
    assert len(await bot.top_hashtags(UserRef("telegram", str(BOB)))) == DEFAULT_TOP_K
    await fake.press(ALICE, fake.result_of(prompt), f"forget|yes|{ALICE}")
    (done,) = await fake.wait_for("editMessageText")
    assert done["text"] == messages.NOTHING_TO_FORGET
    assert len(await bot.top_hashtags(UserRef("telegram", str(BOB)))) == DEFAULT_TOP_K


async def test_the_rate_limit_counts_photos_and_is_checked_before_downloading(
    fake, tiny_model, tmp_path
):
    three = RateLimit(per_minute=1, burst=3)
    async with running_bot(fake, tiny_model, tmp_path / "bot.sqlite3", rate_limit=three) as bot:
        for seed in range(5):  # one at a time: the first three are answered
            await fake.send_message(fake.message(ALICE, photo=fake.add_photo(jpeg(seed=seed))))
        await fake.wait_for("sendMessage", 5)
        await processed(fake, bot)
        texts = [call["text"] for call in fake.calls_to("sendMessage")[:5]]
        assert sum(text.startswith("#") for text in texts) == 3
        assert sum(text.startswith("Too many photos") for text in texts) == 2
        assert len(fake.calls_to("download")) == 3
        for seed in range(2):  # an album costs a photo each, all or nothing
            photo = fake.add_photo(jpeg(seed=seed))
            await fake.send_message(fake.message(ALICE, photo=photo, media_group_id="album"))
        (*_, refusal) = await fake.wait_for("sendMessage", 7)
        assert refusal["text"].startswith("Too many photos")
        assert len(fake.calls_to("download")) == 3


async def test_someone_elses_reactions_give_one_notice_however_many(fake, bot):
    group = -4545
    reply = await send_photo(fake, chat_id=group, chat_type="group", caption="/tags")
    message_id = fake.result_of(reply)["message_id"]
    for _ in range(5):
        await fake.react(BOB, group, message_id, old=[], new=["👍"])
        await fake.react(BOB, group, message_id, old=["👍"], new=[])
    await processed(fake, bot, chat_id=group, chat_type="group")
    notices = [c for c in fake.calls_to("sendMessage") if c["text"] == messages.ONLY_THE_AUTHOR]
    assert len(notices) == 1 and not fake.calls_to("setMessageReaction")


async def test_save_with_nothing_ticked_saves_nothing(fake, bot):
    reply = await send_photo(fake)
    message = fake.result_of(reply)
    for index in range(DEFAULT_TOP_K):
        await fake.press(ALICE, message, f"toggle|{suggestion_id(reply)}|{index}")
        edits = await fake.wait_for("editMessageReplyMarkup", index + 1)
        message["reply_markup"] = edits[-1]["reply_markup"]
    await fake.press(ALICE, message, f"save|{suggestion_id(reply)}")
    (*_, answer) = await fake.wait_for("answerCallbackQuery", DEFAULT_TOP_K + 1)
    assert answer["text"] == messages.saved(ENGLISH, []) == "Nothing was selected."
    assert not fake.calls_to("editMessageText")
    assert await bot.top_hashtags(UserRef("telegram", str(ALICE))) == []


async def test_made_up_buttons_are_acknowledged_and_do_nothing(fake, bot, caplog):
    reply = await send_photo(fake)
    message = fake.result_of(reply)
    made_up = ["save|abc", "forget|yes", "toggle|1", "toggle|1|2|3", "hello", ""]
    for data in made_up:
        await fake.press(ALICE, message, data)
    answers = await fake.wait_for("answerCallbackQuery", len(made_up))
    assert all("text" not in answer for answer in answers)
    await processed(fake, bot)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert await bot.top_hashtags(UserRef("telegram", str(ALICE))) == []
    assert not fake.calls_to("editMessageText") and not fake.calls_to("editMessageReplyMarkup")


async def test_replies_between_people_are_left_alone(fake, bot):
    group = -4646
    alices = await fake.send_message(fake.message(ALICE, chat_id=group, chat_type="group",
                                                  text="look at this"))  # fmt: skip
    await fake.send_message(fake.message(BOB, chat_id=group, chat_type="group",
                                         text="nice #photo", reply_to_message=alices))  # fmt: skip
    await processed(fake, bot, chat_id=group, chat_type="group")
    assert [call["text"] for call in fake.calls_to("sendMessage")] == [messages.HELP]
    own = await fake.send_message(fake.message(ALICE, text="a note to myself"))
    await fake.send_message(fake.message(ALICE, text="#mine", reply_to_message=own))
    (_, _, answer) = await fake.wait_for("sendMessage", 3)
    assert answer["text"] == messages.not_a_photo(ENGLISH)


async def test_a_send_that_timed_out_is_not_sent_again(fake, bot):
    fake.delay_next("sendMessage", 6)  # longer than PTB's 5 s read timeout; it went through
    await fake.send_message(fake.message(ALICE, photo=fake.add_photo(jpeg())))
    await fake.wait_for("sendMessage", 2, timeout=30)  # the suggestion, then an apology
    await processed(fake, bot)
    assert len(suggestions(fake)) == 1


async def test_an_unexpected_failure_is_apologised_for_and_the_bot_carries_on(fake, bot):
    for _ in range(SEND_RETRIES + 1):  # every attempt to fetch the file fails
        fake.fail_next("getFile", 500, description="Internal Server Error")
    await fake.send_message(fake.message(ALICE, photo=fake.add_photo(jpeg())))
    (apology,) = await fake.wait_for("sendMessage")
    assert apology["text"] == messages.SOMETHING_WENT_WRONG
    assert (await send_photo(fake, seed=1))["text"].startswith("#")


async def test_a_shutdown_tells_people_to_try_again(fake, bot):
    reply = await send_photo(fake)
    assert await bot.drain(5)
    await fake.press(ALICE, fake.result_of(reply), f"save|{suggestion_id(reply)}")
    (answer,) = await fake.wait_for("answerCallbackQuery")
    assert answer["text"] == messages.RESTARTING
    assert await bot.top_hashtags(UserRef("telegram", str(ALICE))) == []


async def test_typed_hashtags_are_capped_per_photo_with_a_plain_message(fake, bot):
    """A reply of 936 hashtags keeps the first 30 and
    says so, in a confirmation Telegram accepts; a photo that is full saves nothing more."""
    reply = await send_photo(fake, seed=5)
    bot_message = fake.result_of(reply)
    characters = "abcdefghijklmnopqrstuvwxyz0123456789"
    typed = [a + b for a in characters[:26] for b in characters]
    text = "".join(f"#{tag}" for tag in typed)  # 2,808 characters
    await fake.send_message(fake.message(ALICE, text=text, reply_to_message=bot_message))
    (*_, ack) = await fake.wait_for("sendMessage", 2)
    assert fake.result_of(ack), "Telegram refused the confirmation"
    assert ack["text"].startswith(f"{len(typed) - 30} more did not fit")
    assert ack["text"].endswith(messages.saved(ENGLISH, typed[:30]))
    await fake.send_message(fake.message(ALICE, text="#onemore", reply_to_message=bot_message))
    (*_, full) = await fake.wait_for("sendMessage", 3)
    assert "nothing new was saved" in full["text"]
    await fake.send_message(fake.message(ALICE, text=f"#{typed[0]}", reply_to_message=bot_message))
    (*_, again) = await fake.wait_for("sendMessage", 4)
    # one already kept: said again, stored once
    assert again["text"] == messages.saved(ENGLISH, [typed[0]])
    stored = dict(await bot.top_hashtags(UserRef("telegram", str(ALICE)), limit=100))
    assert set(typed[:30]) <= set(stored) and "onemore" not in stored


# --- each person's settings and language ---------------------------------------------------


async def say(fake: FakeBotAPI, user: int, text: str) -> dict:
    """Send a text and return the bot's answer to it."""
    already = len(fake.calls_to("sendMessage"))
    await fake.send_message(fake.message(user, text=text))
    return (await fake.wait_for("sendMessage", already + 1))[-1]


def shown_tags(reply: dict) -> list[str]:
    return [tag.lstrip("#") for tag in reply["text"].split()]


async def test_a_spanish_client_gets_spanish_until_the_person_picks_another(fake, bot):
    fake.languages[ALICE] = "es"
    spanish, german = texts("es"), texts("de")
    assert (await say(fake, ALICE, "/help"))["text"] == spanish._(messages.HELP)
    assert spanish._(messages.HELP) != messages.HELP  # a real translation, not the fallback
    assert (await say(fake, BOB, "/help"))["text"] == messages.HELP  # no language: English
    labels = [b["text"] for b in (await send_photo(fake))["reply_markup"]["inline_keyboard"][-1]]
    buttons = (messages.SAVE_TICKED, messages.HIDE_UNTICKED, messages.COPY)
    assert labels == [spanish._(label) for label in buttons]
    assert (await say(fake, ALICE, "/language de"))["text"] == messages.language_set(german, False)
    assert (await say(fake, ALICE, "/help"))["text"] == german._(messages.HELP)
    unknown = await say(fake, ALICE, "/language klingon")
    assert unknown["text"] == messages.unknown_language(german, "klingon")
    assert (await say(fake, ALICE, "/language auto"))["text"] == messages.language_set(
        spanish, True
    )
    assert (await say(fake, ALICE, "/count abc"))["text"] == messages.count_usage(spanish, 5)
    assert (await say(fake, BOB, "/help"))["text"] == messages.HELP  # Bob is untouched


async def test_count_and_hidden_hashtags_are_each_persons_own_and_survive_a_restart(
    fake, tiny_model, tmp_path
):
    db = tmp_path / "bot.sqlite3"
    async with running_bot(fake, tiny_model, db):
        first = shown_tags(await send_photo(fake, ALICE, seed=4))
        assert len(first) == DEFAULT_TOP_K
        for bad in ("/count 0", "/count 500", "/count abc", "/count"):
            said = (await say(fake, ALICE, bad))["text"]
            assert said == messages.count_usage(ENGLISH, DEFAULT_TOP_K), bad
        assert (await say(fake, ALICE, "/count 8"))["text"] == messages.count_set(ENGLISH, 8)
        assert (await say(fake, ALICE, "/hide"))["text"] == messages.HIDE_WHICH
        hidden = await say(fake, ALICE, f"/hide #{first[0]}")
        assert hidden["text"] == messages.hidden_now(ENGLISH, [first[0]])
    fake.forget_updates()  # delivered: Telegram would not send them again
    async with running_bot(fake, tiny_model, db):  # a restart keeps both
        again = shown_tags(await send_photo(fake, ALICE, seed=4))
        assert len(again) == 8 and first[0] not in again and set(first[1:]) <= set(again)
        bobs = shown_tags(await send_photo(fake, BOB, seed=4))
        assert bobs == first  # another person is untouched
        listed = await say(fake, ALICE, "/hidden")
        assert listed["text"] == messages.hidden_list(ENGLISH, [first[0]])
        assert (await say(fake, ALICE, f"/unhide {first[0]}"))["text"] == messages.unhidden(
            ENGLISH, first[0]
        )
        assert first[0] in shown_tags(await send_photo(fake, ALICE, seed=4))


async def test_hiding_from_a_suggestion_and_forget_removes_the_settings_too(fake, bot):
    reply = await send_photo(fake, ALICE, seed=7)
    tags, message = shown_tags(reply), fake.result_of(reply)
    sid = suggestion_id(reply)
    await fake.press(ALICE, message, f"hide|{sid}")  # nothing unticked yet
    (first,) = await fake.wait_for("answerCallbackQuery")
    assert first["text"] == messages.UNTICK_FIRST
    await fake.press(ALICE, message, f"toggle|{sid}|1")
    (edit,) = await fake.wait_for("editMessageReplyMarkup")
    copy = edit["reply_markup"]["inline_keyboard"][-1][-1]["copy_text"]["text"]
    assert copy == " ".join(f"#{tag}" for i, tag in enumerate(tags) if i != 1)  # what is ticked
    message["reply_markup"] = edit["reply_markup"]
    await fake.press(BOB, message, f"hide|{sid}")  # not Bob's to press
    await fake.press(ALICE, message, f"hide|{sid}")
    answers = [call.get("text") for call in await fake.wait_for("answerCallbackQuery", 4)]
    assert sorted(map(str, answers[2:])) == sorted(
        [messages.ONLY_THE_AUTHOR, messages.hidden_now(ENGLISH, [tags[1]])]
    )
    assert tags[1] not in shown_tags(await send_photo(fake, ALICE, seed=7))
    assert tags[1] in shown_tags(await send_photo(fake, BOB, seed=7))

    settings = await say(fake, ALICE, "/settings")
    assert "1 hidden hashtag" in settings["text"]
    await fake.press(BOB, fake.result_of(settings), f"count|10|{ALICE}")
    await fake.press(ALICE, fake.result_of(settings), f"count|10|{ALICE}")
    (changed,) = await fake.wait_for("editMessageText")
    assert "10 hashtags per photo" in changed["text"]
    assert len(shown_tags(await send_photo(fake, ALICE, seed=7))) == 10
    assert len(shown_tags(await send_photo(fake, BOB, seed=7))) == DEFAULT_TOP_K

    prompt = await say(fake, ALICE, "/forget")
    await fake.press(ALICE, fake.result_of(prompt), f"forget|yes|{ALICE}")
    await fake.wait_for("editMessageText", 2)
    assert await bot.person_settings(UserRef("telegram", str(ALICE))) == PersonSettings()
    after = shown_tags(await send_photo(fake, ALICE, seed=7))
    assert len(after) == DEFAULT_TOP_K and tags[1] in after
    bob = await bot.person_settings(UserRef("telegram", str(BOB)))
    assert bob == PersonSettings()  # he never chose anything, and still has nothing


async def test_privacy_names_the_operator_contact(fake, tiny_model, tmp_path):
    async with running_bot(fake, tiny_model, tmp_path / "bot.sqlite3", contact="dpo@example.org"):
        fake.languages[ALICE] = "fr-FR"
        said = (await say(fake, ALICE, "/privacy"))["text"]
    assert said == messages.privacy(texts("fr"), "dpo@example.org")
    assert "dpo@example.org" in said and "/forget" in said


async def test_thirty_hashtags_fit_telegrams_limits_and_all_can_be_saved(fake, bot):
    fake.languages[ALICE] = "ru"  # the longest words of the catalogues
    await say(fake, ALICE, "/count 30")
    reply = await send_photo(fake, ALICE, seed=2)
    tags = shown_tags(reply)
    assert len(tags) == 30  # the fake refuses rows over 8 buttons and copy texts over 256
    copied = reply["reply_markup"]["inline_keyboard"][-1][-1]["copy_text"]["text"]
    assert len(copied) <= 256 and reply["text"].startswith(copied)
    await fake.press(ALICE, fake.result_of(reply), f"save|{suggestion_id(reply)}")
    (saved,) = await fake.wait_for("editMessageText")  # after a notice Telegram accepted
    assert saved["text"].endswith(messages.saved(texts("ru"), tags))
    (notice,) = fake.calls_to("answerCallbackQuery")
    assert len(notice["text"]) <= 200
    stored = await bot.top_hashtags(UserRef("telegram", str(ALICE)), limit=100)
    assert sorted(tag for tag, _ in stored) == sorted(tags)
