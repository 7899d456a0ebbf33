"""The store on both back ends, against real databases: a SQLite file and a throwaway
PostgreSQL server. The same tests run on each (the `store` fixture); what only one back end has
(SQLite's pragmas and file locks, PostgreSQL's concurrent start-up) is tested on its own."""

import asyncio
import socket
import sqlite3

import aiosqlite
import asyncpg
import numpy as np
import pytest

from bot.store import PersonSettings, SchemaTooNew, Store, StoreUnavailable
from bot.store.records import ShownEntry
from bot.store.schema import migrate, migrations

EMBEDDING = np.ones(8, dtype=np.float32) / np.sqrt(8)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        location = tmp_path / "bot.sqlite3"
    else:
        location = request.getfixturevalue("postgres_url")
    store = await Store.open(location)
    yield store
    await store.close()


async def rows_per_user(store: Store, table: str) -> dict[int, int]:
    column = "id" if table == "users" else "user_id"
    async with store._reading() as db:
        rows = await db.fetch(f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}")
    return {key: count for key, count in rows}


async def new_suggestion(store: Store, platform_user_id: str = "1", shown=None) -> tuple[int, int]:
    user_id = await store.user_id("telegram", platform_user_id)
    shown = shown or [ShownEntry("beach", 0.9), ShownEntry("sea", 0.8), ShownEntry("sun", 0.4)]
    return user_id, await store.add_suggestion(user_id, "telegram", EMBEDDING, shown, "test-model")


def schema_of(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()


async def test_a_new_database_is_at_the_newest_version_with_safe_settings(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    newest = migrations()[-1].version
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == newest
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = db.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [version for (version,) in applied] == list(range(1, newest + 1))
    cursor = await store._db.execute("PRAGMA foreign_keys")
    assert (await cursor.fetchone())[0] == 1
    await store.close()


@pytest.mark.parametrize("start", range(len(migrations())))
async def test_every_earlier_version_upgrades_to_the_newest_schema(tmp_path, start):
    old = tmp_path / "old.sqlite3"
    async with aiosqlite.connect(old, isolation_level=None) as db:
        assert await migrate(db, target=start) == start
    await (await Store.open(old)).close()  # opening migrates
    fresh = tmp_path / "fresh.sqlite3"
    await (await Store.open(fresh)).close()
    assert schema_of(old) == schema_of(fresh)


async def test_a_database_from_newer_code_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {migrations()[-1].version + 1}")
    with pytest.raises(SchemaTooNew, match="newer version of the bot"):
        await Store.open(path)


async def test_the_same_feedback_twice_counts_once_and_can_be_undone(store):
    user_id, suggestion_id = await new_suggestion(store)
    for _ in range(2):
        await store.record_feedback(suggestion_id, user_id, ["beach", "sea"], 1, "reaction")
    await store.record_feedback(suggestion_id, user_id, ["beach"], 1, "button")
    history = await store.user_history(user_id)
    assert history.photos == 1 and history.verdicts[0] == {"beach": 1, "sea": 1}
    assert await store.remove_feedback(suggestion_id, "reaction") == 2
    assert (await store.user_history(user_id)).verdicts == [{"beach": 1}]  # the button stays


async def test_the_latest_verdict_on_a_tag_wins(store):
    user_id, suggestion_id = await new_suggestion(store)
    await store.record_feedback(suggestion_id, user_id, ["sea"], 1, "button")
    await asyncio.sleep(0.01)
    await store.record_feedback(suggestion_id, user_id, ["sea"], -1, "reaction")
    assert (await store.user_history(user_id)).verdicts == [{"sea": -1}]


async def test_reply_lookup_and_embeddings_round_trip(store):
    user_id, suggestion_id = await new_suggestion(store)
    await store.attach_reply(suggestion_id, "chat-5", "77")
    found = await store.suggestion_for_reply("telegram", "chat-5", "77")
    assert found.id == suggestion_id and found.shown_tags == ["beach", "sea", "sun"]
    assert await store.suggestion_for_reply("discord", "chat-5", "77") is None
    await store.record_feedback(suggestion_id, user_id, ["sun"], 1, "typed")
    history = await store.user_history(user_id)
    np.testing.assert_allclose(history.embeddings[0], EMBEDDING, atol=1e-3)


async def test_forget_removes_every_row_of_that_user_and_nobody_else(store):
    alice, alice_photo = await new_suggestion(store, "alice")
    bob, bob_photo = await new_suggestion(store, "bob")
    for user_id, photo in ((alice, alice_photo), (bob, bob_photo)):
        await store.record_feedback(photo, user_id, ["beach"], 1, "reaction")
    await store.forget_user(alice)
    for table in ("users", "suggestions", "feedback"):
        rows = await rows_per_user(store, table)
        assert alice not in rows and rows[bob] == 1
    assert await store.find_user_id("telegram", "alice") is None


async def test_ids_are_never_reused(store):
    """A stale button or reaction must never reach a newer person's or photo's rows."""
    alice, alice_photo = await new_suggestion(store, "alice")
    await store.forget_user(alice)
    again, again_photo = await new_suggestion(store, "alice")
    assert again > alice and again_photo > alice_photo
    assert await store.suggestion(alice_photo) is None


async def test_every_change_to_a_persons_answers_counts_in_their_history_version(store):
    user_id, suggestion_id = await new_suggestion(store)
    other, _ = await new_suggestion(store, "other")
    assert await store.history_version(user_id) == 0
    await store.record_feedback(suggestion_id, user_id, ["beach"], 1, "reaction")
    await store.record_feedback(suggestion_id, user_id, ["sea"], -1, "button")
    await store.remove_feedback(suggestion_id, "reaction")
    assert await store.history_version(user_id) == 3
    assert await store.history_version(other) == 0


async def test_answers_personalisation_record_and_counts_agree(store):
    user_id, suggestion_id = await new_suggestion(store)
    await store.record_feedback(suggestion_id, user_id, ["beach", "sun"], 1, "button")
    await store.record_feedback(suggestion_id, user_id, ["sea"], -1, "button")
    counts, photos = await store.accepted_tag_counts()
    assert counts == {"beach": 1, "sun": 1} and photos == 1
    assert await store.accepted_tag_counts(since=2**40) == ({}, 0)
    answered = await store.answered_photos("no-such-encoder")
    assert answered.photos == [] and answered.other_encoder == 1 and answered.damaged == []
    assert await store.personalisation_record() == (0, 0)  # shown without logits: no verdict


# (tag, score, model logit, personalised logit): the history brought #sea up from third.
JUDGED = [ShownEntry("sea", 0.9, 0.1, 3.0), ShownEntry("beach", 0.8, 2.0, 2.0)]


async def test_everyones_trust_record_is_a_running_total_that_forget_takes_back(store):
    alice, photo = await new_suggestion(store, "alice", shown=JUDGED)
    bob, other = await new_suggestion(store, "bob", shown=JUDGED)
    await store.record_feedback(photo, alice, ["sea"], 1, "button")  # a win
    await store.record_feedback(other, bob, ["beach"], 1, "button")  # a loss
    assert await store.personalisation_record() == (1, 1)
    await store.record_feedback(photo, alice, ["sea"], 1, "reaction")  # the same verdict again
    assert await store.personalisation_record() == (1, 1)
    await store.remove_feedback(other, "button")  # undone: no verdict on Bob's photo
    assert await store.personalisation_record() == (1, 0)
    await store.record_feedback(other, bob, ["beach"], 1, "typed")
    await store.forget_user(alice)
    assert await store.personalisation_record() == (0, 1)
    async with store._reading() as db:  # the total is what a full count gives
        rows = await db.fetch(
            "SELECT SUM(CASE WHEN personal_won > 0 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN personal_won < 0 THEN 1 ELSE 0 END) FROM suggestions"
        )
    assert tuple(map(int, rows[0])) == (0, 1)


# Damage a SQL UPDATE can do on both back ends (set, value, what the damaged line says).
DAMAGE = [
    ("shown = ?", "not json", "shown hashtags are damaged"),
    ("shown = ?", "[[1, 2]]", "shown hashtags are damaged"),
    ("shown = ?", "[" * 100_000 + "]" * 100_000, "shown hashtags are damaged"),  # too deep
    ("embedding = ?", b"\x00\x7e" * 8, "NaN"),  # float16 NaNs
    ("embedding = ?", b"\0\0\0", "not float16"),  # an odd byte count
    ("created_at = ?", float("inf"), "its time is damaged"),
    ("created_at = ?", 1e15, "its time is damaged"),  # the year 31 million
]


async def test_damaged_rows_are_left_out_of_learning_and_named(store):
    user_id, good = await new_suggestion(store, shown=JUDGED)
    damaged = []
    for change, value, _ in DAMAGE:
        _, photo = await new_suggestion(store, shown=JUDGED)
        damaged.append(photo)
        async with store._transaction() as db:
            await db.execute(f"UPDATE suggestions SET {change} WHERE id = ?", value, photo)
    _, short = await new_suggestion(store, shown=JUDGED)
    async with store._transaction() as db:  # an embedding of another size than the others
        await db.execute("UPDATE suggestions SET embedding = ? WHERE id = ?", b"\0\0", short)
    _, other = await new_suggestion(store, shown=JUDGED)
    for photo in (good, *damaged, short, other):
        async with store._transaction() as db:  # verdicts stored beside the damage, as-is
            await db.execute(
                "INSERT INTO feedback (suggestion_id, user_id, tag, source, verdict, created_at) "
                "VALUES (?, ?, 'sea', 'typed', 1, 0)",
                photo,
                user_id,
            )
    answered = await store.answered_photos(None)
    assert [photo.suggestion_id for photo in answered.photos] == [good, other]
    assert [line.split(":")[0] for line in answered.damaged] == [
        f"suggestion {photo}" for photo in (*damaged, short)
    ]
    for line, (*_, says) in zip(answered.damaged, DAMAGE, strict=False):
        assert says in line
    assert "1 numbers where that encoder's other rows have 8" in answered.damaged[-1]


async def test_the_encoders_size_decides_even_when_most_rows_have_another(store):
    user_id, good = await new_suggestion(store)
    await store.record_feedback(good, user_id, ["sea"], 1, "typed")
    short = []
    for _ in range(3):
        _, photo = await new_suggestion(store)
        await store.record_feedback(photo, user_id, ["sea"], 1, "typed")
        async with store._transaction() as db:
            await db.execute("UPDATE suggestions SET embedding = ? WHERE id = ?", b"\0\0", photo)
        short.append(photo)
    answered = await store.answered_photos(None, dim=len(EMBEDDING))
    assert [photo.suggestion_id for photo in answered.photos] == [good]
    assert answered.damaged == [
        f"suggestion {photo}: its embedding has 1 numbers where the encoder makes 8"
        for photo in short
    ]


async def test_many_coroutines_write_at_once_and_nothing_is_lost(store):
    user_id, suggestion_id = await new_suggestion(store)
    await asyncio.gather(
        *(
            store.record_feedback(suggestion_id, user_id, [f"tag{i}"], 1, "typed")
            for i in range(60)
        ),
        *(store.user_id("telegram", f"other{i}") for i in range(20)),
    )
    assert len((await store.user_history(user_id)).verdicts[0]) == 60


async def test_a_read_never_sees_a_write_that_is_later_rolled_back(store):
    inserted, release = asyncio.Event(), asyncio.Event()

    async def write_then_fail() -> None:
        async with store._transaction() as db:
            await db.execute(
                "INSERT INTO users (platform, platform_user_id, created_at) "
                "VALUES ('telegram', 'ghost', 0)"
            )
            inserted.set()
            await release.wait()
            raise RuntimeError("this write is rolled back")

    writer = asyncio.create_task(write_then_fail())
    await inserted.wait()
    # The read is created before the writer is released, so it runs (and, without the lock,
    # queues its query) while the insert is still uncommitted.
    reader = asyncio.create_task(store.find_user_id("telegram", "ghost"))
    release.set()
    with pytest.raises(RuntimeError, match="rolled back"):
        await writer
    assert await asyncio.wait_for(reader, timeout=30) is None


# --- SQLite only ------------------------------------------------------------------------


async def test_a_locked_database_is_a_clear_error_not_a_crash(tmp_path):
    path = tmp_path / "bot.sqlite3"
    store = await Store.open(path, busy_timeout_ms=100)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="busy"):
            await store.user_id("telegram", "1")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await store.user_id("telegram", "1") == 1  # works again once the lock is gone
    await store.close()


async def test_a_full_disk_is_a_clear_error_and_keeps_what_was_saved(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    user_id, suggestion_id = await new_suggestion(store)
    await store.record_feedback(suggestion_id, user_id, ["beach"], 1, "button")
    cursor = await store._db.execute("PRAGMA page_count")
    pages = (await cursor.fetchone())[0]
    await store._db.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow
    with pytest.raises(StoreUnavailable, match="disk is full"):
        await store.record_feedback(
            suggestion_id, user_id, [f"long-tag-{i}-" + "x" * 200 for i in range(400)], 1, "typed"
        )
    assert (await store.user_history(user_id)).verdicts == [{"beach": 1}]
    await store.close()


async def test_an_undo_during_the_learning_read_leaves_each_photo_whole(tmp_path, monkeypatch):
    """Another process undoes every answer on a photo right after the read's first statement:
    the photo is there with its verdicts or not at all (a read in two statements, suggestions
    then verdicts, found it with no verdicts and raised KeyError)."""
    store = await Store.open(tmp_path / "bot.sqlite3")
    user_id, kept = await new_suggestion(store)
    _, undone = await new_suggestion(store)
    for photo in (kept, undone):
        await store.record_feedback(photo, user_id, ["sea"], 1, "button")
    other_process = sqlite3.connect(tmp_path / "bot.sqlite3", isolation_level=None)
    real_fetch, statements = store._connection.fetch, []

    async def fetch_then_undo(query, *parameters):
        rows = await real_fetch(query, *parameters)
        statements.append(query)
        if len(statements) == 1:
            other_process.execute("DELETE FROM feedback WHERE suggestion_id = ?", (undone,))
        return rows

    monkeypatch.setattr(store._connection, "fetch", fetch_then_undo)
    answered = await store.answered_photos(None)
    monkeypatch.undo()
    other_process.close()
    await store.close()
    assert statements, "the hook must have run"
    assert {photo.suggestion_id: photo.verdicts for photo in answered.photos} in (
        {kept: {"sea": 1}, undone: {"sea": 1}},  # read before the undo
        {kept: {"sea": 1}},  # read after it
    )


# --- PostgreSQL only --------------------------------------------------------------------


async def test_processes_starting_together_migrate_once(postgres_url):
    """Every bot process migrates on start; the advisory lock makes the first one do it."""
    stores = await asyncio.gather(*(Store.open(postgres_url) for _ in range(6)))
    async with stores[0]._reading() as db:
        applied = await db.fetch("SELECT version FROM schema_migrations ORDER BY version")
    newest = migrations("postgresql")[-1].version
    assert [version for (version,) in applied] == list(range(1, newest + 1))
    assert newest == migrations()[-1].version  # both back ends have every step
    await asyncio.gather(*(store.close() for store in stores))


async def test_a_postgres_database_from_newer_code_is_refused(postgres_url):
    store = await Store.open(postgres_url)
    async with store._transaction() as db:
        await db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            999,
            "future",
            0.0,
        )
    await store.close()
    with pytest.raises(SchemaTooNew, match="newer version of the bot"):
        await Store.open(postgres_url)


async def test_an_unreachable_server_is_a_clear_error(postgres_server):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"postgresql://postgres:secret@127.0.0.1:{closed_port}/nowhere"
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL") as caught:
        await Store.open(url)
    assert "secret" not in str(caught.value)  # the password never reaches a log line


async def test_a_unix_socket_url_works_too(postgres_server, postgres_url):
    """`postgresql://user@/db?host=/run/postgresql`: the form for a server on this machine."""
    database = postgres_url.rsplit("/", 1)[1]
    url = f"postgresql://postgres@/{database}?host={postgres_server.folder}&port={postgres_server.port}"
    store = await Store.open(url)
    user_id, suggestion_id = await new_suggestion(store)
    await store.record_feedback(suggestion_id, user_id, ["beach"], 1, "button")
    await store.close()
    tcp = await Store.open(postgres_url)  # the same database, reached over TCP
    assert (await tcp.user_history(user_id)).verdicts == [{"beach": 1}]
    await tcp.close()


async def test_a_persons_settings_are_theirs_and_go_with_forget(store):
    alice, bob = await store.user_id("telegram", "1"), await store.user_id("telegram", "2")
    assert await store.person_settings(alice) == PersonSettings()
    await store.set_tag_count(alice, 8)
    await store.set_language(alice, "es")
    await store.set_tag_count(alice, 12)  # an upsert: the row is changed, not doubled
    await store.hide_tags(alice, ["selfie", "tbt"])
    await store.hide_tags(alice, ["selfie"])  # hidden twice counts once
    assert await store.person_settings(alice) == PersonSettings(
        12, "es", frozenset({"selfie", "tbt"})
    )
    assert await store.unhide_tag(alice, "tbt") and not await store.unhide_tag(alice, "tbt")
    await store.set_language(alice, None)  # back to the app's language
    assert await store.person_settings(alice) == PersonSettings(12, None, frozenset({"selfie"}))
    assert await store.person_settings(bob) == PersonSettings()  # nobody else's changed
    with pytest.raises((sqlite3.IntegrityError, asyncpg.CheckViolationError)):
        await store.set_tag_count(alice, 31)  # the database refuses what the bot never offers
    await store.forget_user(alice)
    assert await rows_per_user(store, "person_settings") == {}
    assert await rows_per_user(store, "hidden_tags") == {}
