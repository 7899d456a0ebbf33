"""The Discord bot end to end: the real discord.Client against a fake REST + gateway."""

import asyncio
import contextlib
import logging
import signal

import discord
import pytest
import torch

from bot.adapters.discord_bot import build_client, use_endpoints
from bot.adapters.telegram_bot import ALLOWED_UPDATES, build_application
from bot.core import messages
from bot.core.conversation import COMMANDS
from bot.core.i18n import ENGLISH, texts
from bot.core.ratelimit import RateLimit
from bot.core.service import DEFAULT_TOP_K, HashtagService, UserRef
from bot.store import Store, StoreUnavailable
from inference.engine import InferenceEngine
from tests.bot_process import start_bot
from tests.corpus import jpeg
from tests.fake_discord import BOT, BOT_ID, CHANNEL_ID, GUILD_ID, TOKEN, FakeDiscord
from tests.fake_telegram import TOKEN as TELEGRAM_TOKEN
from tests.fake_telegram import FakeBotAPI
from tests.waiting import until

ALICE, BOB = 100, 200


@pytest.fixture
async def fake(monkeypatch):
    server = FakeDiscord()
    await server.start()
    # use_endpoints sets discord.py's class attributes; monkeypatch puts them back afterwards.
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )
    use_endpoints(server.api_url, server.gateway_url)
    yield server
    await server.stop()


@contextlib.asynccontextmanager
async def running_client(service: HashtagService, **options):
    client = build_client(service, guild_ready_timeout=0.1, **options)
    task = asyncio.create_task(client.start(TOKEN))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the client stopped before it was ready: show why
        assert ready.done(), "the Discord client did not become ready"
        yield client
    finally:
        await client.close()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def core(tiny_model, db_path):
    store = await Store.open(db_path)
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        yield HashtagService(engine, store)
    await store.close()


@pytest.fixture
async def bot(fake, tiny_model, tmp_path):
    async with core(tiny_model, tmp_path / "bot.sqlite3") as service, running_client(service):
        yield service


def replies(fake: FakeDiscord) -> list:
    return [
        call for call in fake.calls_to("POST", "/messages") if call.path.startswith("/channels/")
    ]


async def send_photo(fake: FakeDiscord, bot: HashtagService, author=ALICE, seed=0, **message):
    """DM (or post) a photo; returns the bot's reply as the fake created it, once recorded."""
    before = len(replies(fake))
    attachment = fake.attachment(jpeg(seed=seed))
    await fake.send_message(fake.message(author, attachments=[attachment], **message))
    await fake.wait_for("POST", "/messages", before + 1)
    reply = replies(fake)[-1].result
    await recorded(bot, reply)
    return reply


async def recorded(bot: HashtagService, reply: dict) -> None:
    """Wait until the bot has stored which message carries the suggestion.

    It can only do so once Discord answered, and a person cannot react to a message they have
    not seen yet.
    """
    await until(
        lambda: bot.store.suggestion_for_reply("discord", reply["channel_id"], reply["id"]),
        "the bot to store which message carries its suggestion",
    )


async def processed(fake: FakeDiscord, author=ALICE) -> None:
    """Wait until the bot has handled the events sent so far: a later DM is answered."""
    before = len(replies(fake))
    await fake.send_message(fake.message(author, content="are you there?"))
    await fake.wait_for("POST", "/messages", before + 1)


def custom_ids(message: dict) -> list[str]:
    return [button["custom_id"] for row in message["components"] for button in row["components"]]


def save_id(message: dict) -> str:
    return next(custom_id for custom_id in custom_ids(message) if custom_id.startswith("save|"))


async def test_a_dm_photo_gets_hashtags_and_buttons(fake, bot):
    reply = await send_photo(fake, bot)
    tags = reply["content"].split()
    assert len(tags) == DEFAULT_TOP_K and all(tag.startswith("#") for tag in tags)
    ids = custom_ids(reply)  # no copy button: Discord has none, and the text copies as it is
    assert len(ids) == DEFAULT_TOP_K + 2 and ids[-2].startswith("save|")
    assert ids[-1].startswith("hide|")
    request = replies(fake)[-1].body
    assert request["message_reference"]["message_id"]  # a reply to the photo


async def test_thumbs_up_saves_and_removing_it_undoes(fake, bot):
    reply = await send_photo(fake, bot)
    await fake.react(ALICE, reply, "👍")
    await fake.wait_for("PUT", "/reactions/")
    me = UserRef("discord", str(ALICE))
    assert len(await bot.top_hashtags(me)) == DEFAULT_TOP_K
    await fake.react(ALICE, reply, "👍", added=False)
    (undone,) = await fake.wait_for("DELETE", "/reactions/")  # the bot's 👌 goes with it
    assert undone.path.endswith("/reactions/👌/@me")
    assert await bot.top_hashtags(me) == []


async def test_buttons_untick_and_save(fake, bot):
    reply = await send_photo(fake, bot)
    first_toggle = custom_ids(reply)[0]
    await fake.press(ALICE, reply, first_toggle)
    (toggle,) = await fake.wait_for("POST", "/callback")
    assert toggle.body["type"] == 7  # update the message in place
    reply["components"] = toggle.body["data"]["components"]
    await fake.press(ALICE, reply, save_id(reply))
    (_, save) = await fake.wait_for("POST", "/callback", 2)
    assert "Saved" in save.body["data"]["content"]
    shown = [tag.lstrip("#") for tag in reply["content"].split()]
    stored = {tag for tag, _ in await bot.top_hashtags(UserRef("discord", str(ALICE)))}
    assert stored == set(shown[1:])


async def test_own_hashtags_reply_is_stored_and_comes_back(fake, bot):
    reply = await send_photo(fake, bot, seed=3)
    reference = {"message_id": reply["id"], "channel_id": reply["channel_id"]}
    await fake.send_message(
        fake.message(
            ALICE, content="#MyCatLuna", message_reference=reference, referenced_message=reply
        )
    )
    await fake.wait_for("POST", "/messages", 2)
    assert replies(fake)[-1].body["content"] == messages.saved(ENGLISH, ["mycatluna"])
    again = await send_photo(fake, bot, seed=3)
    assert "#mycatluna" in again["content"].split()


async def test_a_confirmation_too_long_for_discord_is_cut_to_fit(fake, bot):
    """31 hashtags of 64 letters (a Nitro message holds 4,000 characters): 30 are kept, and
    the confirmation, longer than Discord's 2,000, is cut to fit instead of refused, keeping
    the word about what did not fit."""
    reply = await send_photo(fake, bot, seed=3)
    reference = {"message_id": reply["id"], "channel_id": reply["channel_id"]}
    typed = [letter * 64 for letter in "abcdefghijklmnopqrstuvwxyz01234"]
    text = " ".join(f"#{tag}" for tag in typed)
    message = fake.message(
        ALICE, content=text, message_reference=reference, referenced_message=reply
    )
    await fake.send_message(message)
    await fake.wait_for("POST", "/messages", 2)
    (*_, ack) = replies(fake)
    assert ack.result.get("code") != 50035, "Discord refused the confirmation"
    assert len(ack.body["content"]) <= 2000 and ack.body["content"].endswith("…")
    assert ack.body["content"].startswith("1 more did not fit")
    assert messages.saved(ENGLISH, [typed[0]]) in ack.body["content"]
    stored = dict(await bot.top_hashtags(UserRef("discord", str(ALICE)), limit=100))
    assert len(stored) == 30 and typed[30] not in stored


async def test_in_a_server_only_mentions_are_read_and_only_the_author_counts(fake, bot):
    attachment = fake.attachment(jpeg())
    unmentioned = await fake.send_message(fake.message(ALICE, guild=True, attachments=[attachment]))
    reply = await send_photo(fake, bot, guild=True, content=f"<@{BOT_ID}>", mentions=[BOT])
    # No message_content intent, not mentioned: not for us; the one reply is to the other.
    (answered,) = replies(fake)
    assert answered.body["message_reference"]["message_id"] != unmentioned["id"]
    assert reply["channel_id"] == str(CHANNEL_ID)
    await fake.react(BOB, reply, "👍")
    await fake.press(BOB, reply, save_id(reply))
    (notice,) = await fake.wait_for("POST", "/callback")
    assert notice.body["data"]["content"] == messages.ONLY_THE_AUTHOR
    assert notice.body["data"]["flags"] == 64  # ephemeral
    assert fake.calls_to("PUT", "/reactions/") == []
    for person in (ALICE, BOB):
        assert await bot.top_hashtags(UserRef("discord", str(person))) == []


async def test_slash_tags_with_and_without_an_image(fake, bot):
    attachment = fake.attachment(jpeg(seed=5))
    await fake.slash(ALICE, "tags", attachment)
    (followup,) = await fake.wait_for("POST", "/webhooks/")
    assert followup.body["content"].startswith("#")
    await fake.slash(ALICE, "tags")
    (_, listing) = await fake.wait_for("POST", "/callback", 2)
    assert listing.body["data"]["content"] == messages.NO_HISTORY
    assert listing.body["data"]["flags"] == 64


async def test_bad_attachments_get_a_clear_reply_and_are_not_downloaded(fake, bot):
    huge = fake.attachment(b"x", size=50 * 1024 * 1024)
    await fake.send_message(fake.message(ALICE, attachments=[huge]))
    await fake.wait_for("POST", "/messages")
    assert "limit is 20 MB" in replies(fake)[-1].body["content"]
    pdf = fake.attachment(b"%PDF-1.7", content_type="application/pdf", name="doc.pdf")
    await fake.send_message(fake.message(ALICE, attachments=[pdf]))
    await fake.wait_for("POST", "/messages", 2)
    assert replies(fake)[-1].body["content"] == messages.not_a_photo(ENGLISH)
    broken = fake.attachment(b"not really a jpeg")
    await fake.send_message(fake.message(ALICE, attachments=[broken]))
    await fake.wait_for("POST", "/messages", 3)
    assert "not an image" in replies(fake)[-1].body["content"]
    downloads = [call.path for call in fake.calls if call.path.startswith("/attachments/")]
    assert downloads == [f"/attachments/{broken['id']}"]


async def test_several_images_in_one_message_get_one_reply(fake, bot):
    attachments = [fake.attachment(jpeg(seed=s)) for s in (1, 2, 3)]
    await fake.send_message(fake.message(ALICE, attachments=attachments))
    await fake.wait_for("POST", "/messages")
    await processed(fake)
    assert [call.body["content"][0] for call in replies(fake)] == ["#", "I"]


async def test_forget_asks_first_then_deletes_everything(fake, bot):
    reply = await send_photo(fake, bot)
    await fake.react(ALICE, reply, "👍")
    await fake.wait_for("PUT", "/reactions/")
    await fake.slash(ALICE, "forget")
    (confirm,) = await fake.wait_for("POST", "/callback")
    assert confirm.body["data"]["content"] == messages.FORGET_CONFIRM
    assert confirm.body["data"]["flags"] == 64
    confirm_message = {
        **reply,
        "content": messages.FORGET_CONFIRM,
        "components": confirm.body["data"]["components"],
    }
    await fake.press(ALICE, confirm_message, f"forget|yes|{ALICE}")
    (_, done) = await fake.wait_for("POST", "/callback", 2)
    assert done.body["data"]["content"] == messages.FORGOTTEN
    assert await bot.top_hashtags(UserRef("discord", str(ALICE))) == []


async def test_telegram_and_discord_in_one_process_share_the_core_but_not_histories(
    fake, tiny_model, tmp_path
):
    from tests.fake_telegram import TOKEN as TELEGRAM_TOKEN
    from tests.fake_telegram import FakeBotAPI

    telegram = FakeBotAPI()
    await telegram.start()
    async with core(tiny_model, tmp_path / "bot.sqlite3") as service, running_client(service):
        application = build_application(service, TELEGRAM_TOKEN, telegram.url)
        async with application:
            await application.start()
            await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
            photo = telegram.add_photo(jpeg(seed=8))
            await telegram.send_message(telegram.message(ALICE, photo=photo))
            discord_reply = await send_photo(fake, service, author=ALICE, seed=8)
            (telegram_reply,) = await telegram.wait_for("sendMessage")
            assert telegram_reply["text"].startswith("#") and discord_reply["content"].startswith(
                "#"
            )
            reference = {
                "message_id": discord_reply["id"],
                "channel_id": discord_reply["channel_id"],
            }
            await fake.send_message(
                fake.message(
                    ALICE,
                    content="#onlyondiscord",
                    message_reference=reference,
                    referenced_message=discord_reply,
                )
            )
            await fake.wait_for("POST", "/messages", 2)
            await application.updater.stop()
            await application.stop()
        # Same numeric id, different platforms: two people, two histories.
        assert await service.top_hashtags(UserRef("discord", str(ALICE))) == [("onlyondiscord", 1)]
        assert await service.top_hashtags(UserRef("telegram", str(ALICE))) == []
    await telegram.stop()


async def test_the_message_menu_suggests_for_someone_elses_photo(fake, bot):
    photo = fake.message(
        ALICE, guild=True, content="#alicesown", attachments=[fake.attachment(jpeg(seed=6))]
    )
    data = {
        "id": "2",
        "name": "Suggest hashtags",
        "type": 3,
        "target_id": photo["id"],
        "resolved": {"messages": {photo["id"]: photo}},
    }
    await fake.interact(BOB, 2, data, guild=True)
    (followup,) = await fake.wait_for("POST", "/webhooks/")
    assert followup.body["content"].startswith("#")
    # The suggestion is Bob's, who asked: Alice may not save it, Bob may; her caption's
    # hashtags are stored for nobody.
    message = {**followup.result, "guild_id": "1"}
    await fake.press(ALICE, message, save_id(message))
    (*_, notice) = await fake.wait_for("POST", "/callback", 2)
    assert notice.body["data"]["content"] == messages.ONLY_THE_AUTHOR
    await fake.press(BOB, message, save_id(message))
    (*_, saved) = await fake.wait_for("POST", "/callback", 3)
    assert "Saved" in saved.body["data"]["content"]
    bobs = dict(await bot.top_hashtags(UserRef("discord", str(BOB))))
    assert len(bobs) == DEFAULT_TOP_K and "alicesown" not in bobs
    assert await bot.top_hashtags(UserRef("discord", str(ALICE))) == []


async def test_python_dash_m_bot_serves_both_platforms_in_one_process(
    fake, tiny_clip_files, tmp_path
):
    telegram = FakeBotAPI()
    await telegram.start()
    env = {
        "LOG_LEVEL": "DEBUG",
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
        "TELEGRAM_API_URL": telegram.url,
        "DISCORD_BOT_TOKEN": TOKEN,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    }
    process = await start_bot(tiny_clip_files, tmp_path / "bot.sqlite3", env)
    try:
        await asyncio.wait_for(fake.ready.wait(), 120)
        await telegram.wait_for("getUpdates", timeout=120)
        await telegram.send_message(telegram.message(ALICE, photo=telegram.add_photo(jpeg())))
        attachment = fake.attachment(jpeg(seed=1))
        await fake.send_message(fake.message(BOB, attachments=[attachment]))
        (telegram_reply,) = await telegram.wait_for("sendMessage")
        await fake.wait_for("POST", "/messages")
        assert telegram_reply["text"].startswith("#")
        assert replies(fake)[-1].body["content"].startswith("#")
        # Telegram's command menu, once per language (the English one for everyone else).
        menus = {m.get("language_code"): m for m in telegram.calls_to("setMyCommands")}
        assert menus.keys() == {None, "es", "pt", "de", "fr", "ru", "it"}
        spanish = menus["es"]["commands"]
        count = next(command for command in spanish if command["command"] == "count")
        assert count["description"] == texts("es")._(messages.COMMAND_DESCRIPTIONS["count"])
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        await telegram.stop()
    log = output.decode()
    assert process.returncode == 0, log
    for secret in (TOKEN, TELEGRAM_TOKEN, TELEGRAM_TOKEN.split(":")[1]):
        assert secret not in log


async def test_commands_are_synced_and_the_gateway_is_kept_alive(fake, bot):
    (sync,) = fake.calls_to("PUT", "/commands")
    assert sync.path == f"/applications/{BOT_ID}/commands"  # global by default
    commands = {command["name"]: command for command in sync.body}
    expected = {command.name for command in COMMANDS if command.on_discord}
    assert commands.keys() == expected | {"Suggest hashtags"}
    # Described in every language the bot speaks, for the client's locale.
    count = commands["count"]
    spanish = texts("es")
    assert count["description"] == messages.COMMAND_DESCRIPTIONS["count"]
    assert count["description_localizations"]["es-ES"] == spanish._(count["description"])
    assert count["description_localizations"]["es-419"] != count["description"]
    assert count["description_localizations"]["pt-BR"] == texts("pt")._(count["description"])
    (value,) = count["options"]
    assert value["description_localizations"]["de"] == texts("de")._(value["description"])
    assert "en-US" not in count.get("description_localizations", {})

    await until(lambda: fake.heartbeats >= 1, "a gateway heartbeat")


async def test_one_guild_sync_and_the_sharded_client(fake, tiny_model, tmp_path):
    async with (
        core(tiny_model, tmp_path / "bot.sqlite3") as service,
        running_client(service, guild_id=GUILD_ID, sharded=True),
    ):
        (sync,) = fake.calls_to("PUT", "/commands")
        assert sync.path == f"/applications/{BOT_ID}/guilds/{GUILD_ID}/commands"
        assert fake.calls_to("GET", "/gateway/bot")  # the sharded client asks how many shards
        reply = await send_photo(fake, service)
        assert reply["content"].startswith("#")


async def test_chosen_channels_are_read_without_a_mention(fake, tiny_model, tmp_path):
    async with (
        core(tiny_model, tmp_path / "bot.sqlite3") as service,
        running_client(service, content_channels=[CHANNEL_ID]) as client,
    ):
        assert client.intents.message_content
        reply = await send_photo(fake, service, guild=True)
        assert reply["channel_id"] == str(CHANNEL_ID)


async def test_thumbs_down_rejects_and_a_429_is_waited_out(fake, bot):
    limited = {"message": "You are being rate limited.", "retry_after": 0.2, "global": False}
    fake.fail_next("POST", "/messages", 429, **limited)
    await fake.send_message(fake.message(ALICE, attachments=[fake.attachment(jpeg())]))
    refused, sent = await fake.wait_for("POST", "/messages", 2)  # refused once, then sent
    assert refused.result == limited and sent.result["content"].startswith("#")
    reply = sent.result
    await recorded(bot, reply)
    await fake.react(ALICE, reply, "👎")
    await fake.wait_for("PUT", "/reactions/")
    history = await bot.store.user_history(await bot.store.find_user_id("discord", str(ALICE)))
    assert set(history.verdicts[0].values()) == {-1}


async def test_buttons_and_reactions_keep_working_after_a_restart(fake, tiny_model, tmp_path):
    db = tmp_path / "bot.sqlite3"
    async with core(tiny_model, db) as service, running_client(service):
        reply = await send_photo(fake, service)
    fake.ready.clear()
    async with core(tiny_model, db) as service, running_client(service):
        await fake.press(ALICE, reply, save_id(reply))  # a button from before the restart
        (save,) = await fake.wait_for("POST", "/callback")
        assert "Saved" in save.body["data"]["content"]
        assert len(await service.top_hashtags(UserRef("discord", str(ALICE)))) == DEFAULT_TOP_K
        await fake.react(ALICE, reply, "👍", added=False)  # and a reaction: nothing to undo
        await fake.react(ALICE, reply, "👎")
        await fake.wait_for("PUT", "/reactions/")


async def test_replies_between_people_in_a_read_channel_are_left_alone(fake, tiny_model, tmp_path):
    async with (
        core(tiny_model, tmp_path / "bot.sqlite3") as service,
        running_client(service, content_channels=[CHANNEL_ID]),
    ):
        alices = await fake.send_message(fake.message(ALICE, guild=True, content="hello all"))
        reference = {"message_id": alices["id"], "channel_id": alices["channel_id"]}
        await fake.send_message(
            fake.message(BOB, guild=True, content="hi #alice", message_reference=reference,
                         referenced_message=alices)
        )  # fmt: skip
        await processed(fake)
        assert [call.body["content"] for call in replies(fake)] == [messages.not_a_photo(ENGLISH)]


async def test_slash_tags_is_always_answered(fake, bot, monkeypatch):
    async def locked(user):
        raise StoreUnavailable("The database is busy; please try again in a moment.")

    monkeypatch.setattr(bot, "top_hashtags", locked)
    await fake.slash(ALICE, "tags")
    (answer,) = await fake.wait_for("POST", "/callback")
    assert answer.body["data"]["content"].startswith("The database is busy")
    assert await bot.drain(5)  # shutting down: the deferred /tags still gets a word
    await fake.slash(ALICE, "tags", fake.attachment(jpeg()))
    (_, deferred) = await fake.wait_for("POST", "/callback", 2)
    assert deferred.body["type"] == 5
    (followup,) = await fake.wait_for("POST", "/webhooks/")
    assert followup.body["content"] == messages.RESTARTING


async def test_made_up_buttons_and_someone_elses_forget_do_nothing(fake, bot, caplog):
    reply = await send_photo(fake, bot)
    for custom_id in ("save|abc", "toggle|1", "forget|yes"):
        await fake.press(ALICE, reply, custom_id)
    answers = await fake.wait_for("POST", "/callback", 3)
    assert [answer.body["type"] for answer in answers] == [6, 6, 6]  # acknowledged, unchanged
    await fake.press(BOB, reply, f"forget|yes|{ALICE}")
    (*_, refused) = await fake.wait_for("POST", "/callback", 4)
    assert refused.body["data"]["content"] == messages.ONLY_WHO_ASKED
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_an_image_too_many_is_refused_before_downloading(fake, tiny_model, tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        service = HashtagService(engine, store, rate_limit=RateLimit(per_minute=1, burst=2))
        async with running_client(service):
            await send_photo(fake, service)
            attachments = [fake.attachment(jpeg(seed=s)) for s in (1, 2)]
            await fake.send_message(fake.message(ALICE, attachments=attachments))
            await fake.wait_for("POST", "/messages", 2)
            assert replies(fake)[-1].body["content"].startswith("Too many photos")
            downloads = [call for call in fake.calls if call.path.startswith("/attachments/")]
            assert len(downloads) == 1
    await store.close()


async def slash_answer(fake: FakeDiscord, user: int, name: str, value: str | None = None) -> dict:
    """A slash command and the bot's (ephemeral) answer to it."""
    before = len(fake.calls_to("POST", "/callback"))
    await fake.slash(user, name, value=value)
    return (await fake.wait_for("POST", "/callback", before + 1))[-1].body["data"]


async def test_settings_and_language_on_discord_are_each_persons_own(fake, bot):
    fake.languages[ALICE] = "es-ES"
    spanish = texts("es")
    assert (await slash_answer(fake, ALICE, "help"))["content"] == spanish._(messages.HELP)
    assert (await slash_answer(fake, BOB, "help"))["content"] == messages.HELP
    for bad in ("0", "500", "abc"):
        said = await slash_answer(fake, ALICE, "count", bad)
        assert said["content"] == messages.count_usage(spanish, DEFAULT_TOP_K)
    said = await slash_answer(fake, ALICE, "count", "8")
    assert said["content"] == messages.count_set(spanish, 8)
    reply = await send_photo(fake, bot, ALICE, seed=4)
    first = reply["content"].split()
    assert len(first) == 8
    # A message carries no locale: the last interaction's stands in.
    labels = [button["label"] for row in reply["components"] for button in row["components"]]
    assert spanish._(messages.SAVE_TICKED) in labels
    assert (await slash_answer(fake, ALICE, "hide"))["content"] == spanish._(messages.HIDE_WHICH)
    said = await slash_answer(fake, ALICE, "hide", first[0])
    assert said["content"] == messages.hidden_now(spanish, [first[0].lstrip("#")])
    again = (await send_photo(fake, bot, ALICE, seed=4))["content"].split()
    assert first[0] not in again and len(again) == 8
    bobs = (await send_photo(fake, bot, BOB, seed=4))["content"].split()
    assert len(bobs) == DEFAULT_TOP_K and bobs[0] == first[0]  # Bob is untouched
    said = await slash_answer(fake, ALICE, "language", "xx")
    assert said["content"] == messages.unknown_language(spanish, "xx")

    prompt = await slash_answer(fake, ALICE, "forget")
    message = {**(await send_photo(fake, bot, ALICE)), "components": prompt["components"]}
    await fake.press(ALICE, message, f"forget|yes|{ALICE}")
    forgotten = spanish._(messages.FORGOTTEN)

    def answered() -> bool:
        calls = fake.calls_to("POST", "/callback")
        return any(call.body.get("data", {}).get("content") == forgotten for call in calls)

    await until(answered, "the /forget press to be answered, in Spanish")
    after = (await send_photo(fake, bot, ALICE, seed=4))["content"].split()
    assert len(after) == DEFAULT_TOP_K and after[0] == first[0]  # settings went with /forget
