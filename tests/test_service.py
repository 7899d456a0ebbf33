"""The platform-neutral core, driven as the adapters drive it: real engine, real database."""

import asyncio

import numpy as np
import pytest
import torch

from bot.core.ratelimit import RateLimit, RateLimiter
from bot.core.service import (
    DEFAULT_TOP_K,
    HashtagService,
    NotYourSuggestion,
    RateLimited,
    UnknownSuggestion,
    UserRef,
    extract_hashtags,
)
from bot.store import Store
from inference.engine import InferenceEngine
from inference.images import ImageRejected
from tests.corpus import jpeg

ALICE, BOB = UserRef("telegram", "100"), UserRef("telegram", "200")
ALICE_ON_DISCORD = UserRef("discord", "100")


@pytest.fixture
async def service(tiny_model, tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        yield HashtagService(engine, store, rate_limit=RateLimit(600, 50))
    await store.close()


async def test_a_new_user_gets_the_models_own_top_hashtags(service):
    photo = jpeg(seed=1)
    suggestion = await service.suggest(ALICE, [photo])
    prediction = await service.engine.predict(photo)
    assert [tag for tag, _ in suggestion.tags] == [tag for tag, _ in prediction.top(DEFAULT_TOP_K)]
    assert suggestion.text.startswith("#") and len(suggestion.text.split()) == DEFAULT_TOP_K


async def test_accept_some_all_and_reject_write_only_shown_tags(service):
    suggestion = await service.suggest(ALICE, [jpeg(seed=2)])
    shown = [tag for tag, _ in suggestion.tags]
    assert await service.accept(ALICE, suggestion.id, [f"#{shown[1]}", "notshown"]) == [shown[1]]
    assert await service.accept(ALICE, suggestion.id, source="reaction") == shown
    assert await service.reject(ALICE, suggestion.id, [shown[2]], source="button") == [shown[2]]
    top = dict(await service.top_hashtags(ALICE))
    assert shown[1] in top and shown[0] in top


async def test_own_hashtags_outside_the_vocabulary_come_back_on_the_next_similar_photo(service):
    photo = jpeg(seed=3)
    first = await service.suggest(ALICE, [photo])
    saved = await service.add_own_tags(ALICE, first.id, "mine: #MyCatLuna #beach, #x")
    assert saved.saved == ["mycatluna", "beach", "x"] and saved.left_out == 0
    again = await service.suggest(ALICE, [photo])
    assert "mycatluna" in [tag for tag, _ in again.tags]
    # Bob's suggestions are untouched by Alice's history.
    assert "mycatluna" not in [tag for tag, _ in (await service.suggest(BOB, [photo])).tags]


async def test_another_persons_reaction_never_writes_history(service):
    suggestion = await service.suggest(ALICE, [jpeg(seed=4)])
    await service.suggest(BOB, [jpeg(seed=5)])  # Bob exists, with history of his own
    for stranger in (BOB, ALICE_ON_DISCORD, UserRef("telegram", "never-seen")):
        with pytest.raises(NotYourSuggestion):
            await service.accept(stranger, suggestion.id)
        with pytest.raises(NotYourSuggestion):
            await service.add_own_tags(stranger, suggestion.id, "#spam")
    assert await service.top_hashtags(ALICE) == [] and await service.top_hashtags(BOB) == []


async def test_undo_removes_only_what_that_reaction_said(service):
    suggestion = await service.suggest(ALICE, [jpeg(seed=6)])
    shown = [tag for tag, _ in suggestion.tags]
    await service.accept(ALICE, suggestion.id, [shown[0]], source="button")
    await service.accept(ALICE, suggestion.id, source="reaction")
    assert await service.undo(ALICE, suggestion.id, "reaction", verdict=1) == len(shown)
    assert await service.top_hashtags(ALICE) == [(shown[0], 1)]


async def test_caption_hashtags_are_recorded_as_the_persons_own(service):
    suggestion = await service.suggest(ALICE, [jpeg(seed=7)], caption="sunday #BrunchClub #food")
    assert suggestion.caption_tags == ["brunchclub", "food"]
    assert dict(await service.top_hashtags(ALICE)) == {"brunchclub": 1, "food": 1}


async def test_replies_are_found_by_the_bot_message_that_carries_them(service):
    suggestion = await service.suggest(ALICE, [jpeg(seed=8)])
    await service.attach_reply(suggestion.id, 555, 42)
    assert (await service.find_by_reply("telegram", "555", "42")).id == suggestion.id
    with pytest.raises(UnknownSuggestion):
        await service.find_by_reply("discord", "555", "42")


async def test_forget_deletes_everything_and_the_person_starts_fresh(service):
    photo = jpeg(seed=9)
    suggestion = await service.suggest(ALICE, [photo])
    await service.add_own_tags(ALICE, suggestion.id, "#onlymine")
    assert await service.forget(ALICE) is True
    assert await service.top_hashtags(ALICE) == []
    assert "onlymine" not in [tag for tag, _ in (await service.suggest(ALICE, [photo])).tags]
    with pytest.raises(UnknownSuggestion):
        await service.accept(ALICE, suggestion.id)
    assert await service.forget(UserRef("telegram", "nobody")) is False


async def test_bad_images_and_floods_get_clear_errors(service, tiny_model):
    with pytest.raises(ImageRejected):
        await service.suggest(ALICE, [b"definitely not a photo"])
    strict = HashtagService(
        service.engine,
        service.store,
        rate_limit=RateLimit(per_minute=1, burst=2),
    )
    strict.admit_photos(BOB, 1)
    strict.admit_photos(BOB, 1)
    with pytest.raises(RateLimited) as limited:
        strict.admit_photos(BOB, 1)
    assert 30 < limited.value.retry_after <= 60
    strict.admit_photos(ALICE, 2)  # others are not affected
    with pytest.raises(RateLimited):
        strict.admit_photos(ALICE, 1)


async def test_an_album_is_one_post_and_a_bad_photo_in_it_is_skipped(service):
    photos = [jpeg(seed=20), jpeg(seed=21)]
    album = await service.suggest(ALICE, [*photos, b"broken"])
    predictions = [await service.engine.predict(photo) for photo in photos]
    best = np.max([p.scores for p in predictions], axis=0)
    expected = [service.vocabulary[i] for i in np.argsort(-best, kind="stable")[:DEFAULT_TOP_K]]
    assert [tag for tag, _ in album.tags] == expected


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(RateLimit(per_minute=6, burst=2), clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.acquire("a") == pytest.approx(10)
    now[0] += 10
    assert limiter.acquire("a") == 0


def test_an_album_takes_one_token_per_photo_all_or_none():
    now = [0.0]
    limiter = RateLimiter(RateLimit(per_minute=6, burst=3), clock=lambda: now[0])
    assert limiter.acquire("a", 2) == 0
    assert limiter.acquire("a", 2) == pytest.approx(10)  # one left: the album waits for two
    assert limiter.acquire("a", 1) == 0  # and took nothing
    now[0] += 30
    assert limiter.acquire("a", 10) == 0  # bigger than the burst: a full bucket will do


def test_hashtags_are_extracted_normalised_and_bounded():
    assert extract_hashtags("#Beach #beach #sun_set, #x" + " #" + "a" * 80) == [
        "beach",
        "sun_set",
        "x",
    ]
    assert extract_hashtags(None) == [] and extract_hashtags("no tags here") == []
    assert extract_hashtags("#日本 #Café") == ["日本", "café"]


async def test_an_answer_updates_the_cached_profile_without_rereading_the_history(service):
    reads = []
    full_history = service.store.user_history

    async def counting(user_id, suggestion_id=None):
        reads.append(suggestion_id)
        return await full_history(user_id, suggestion_id)

    service.store.user_history = counting
    photo = jpeg(seed=30)
    first = await service.suggest(ALICE, [photo])  # builds (and caches) Alice's profile
    await service.add_own_tags(ALICE, first.id, "#lunaonthebeach")
    await service.reject(ALICE, first.id, [first.tags[0][0]], source="button")
    again = [tag for tag, _ in (await service.suggest(ALICE, [photo])).tags]
    assert "lunaonthebeach" in again and first.tags[0][0] not in again[:1]
    assert reads == [None, first.id, first.id]  # one whole history, then one photo per answer


async def test_the_profile_cache_stays_within_its_byte_budget(tiny_model, tmp_path):
    """People with answered photos, through the real service: the cache never holds more bytes
    than its budget, the least recently seen go first, and a person too big to keep still
    gets personalised suggestions."""
    store = await Store.open(tmp_path / "bot.sqlite3")
    async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
        service = HashtagService(engine, store, rate_limit=None, profile_cache_bytes=10_000)
        people = [UserRef("telegram", str(n)) for n in range(6)]
        for seed, person in enumerate(people):
            for photo in range(4):
                suggestion = await service.suggest(person, [jpeg(seed=seed * 10 + photo)])
                await service.add_own_tags(person, suggestion.id, f"#mine{seed}")
            await service.suggest(person, [jpeg(seed=seed)])
            cache = service._profiles
            assert cache.nbytes <= 10_000 and len(cache) >= 1
        assert service._profiles.get(1) is None  # the first people made room for the last
        service._profiles.budget_bytes = 100  # smaller than anyone's profile
        again = await service.suggest(people[0], [jpeg(seed=0)])
        assert "mine0" in [tag for tag, _ in again.tags] and service._profiles.get(1) is None
    await store.close()


async def test_replies_at_once_cannot_pass_the_own_hashtag_cap_together(service):
    photo = await service.suggest(ALICE, [jpeg(seed=7)])
    replies = [" ".join(f"#r{r}t{t}" for t in range(30)) for r in range(5)]
    results = await asyncio.gather(*(service.add_own_tags(ALICE, photo.id, r) for r in replies))
    assert sum(len(result.saved) for result in results) == 30
    assert sum(result.left_out for result in results) == 120
    stored = await service.store.feedback_tags(photo.id, ("typed", "caption"))
    assert len(stored) == 30 and not service._own_tags_locks
