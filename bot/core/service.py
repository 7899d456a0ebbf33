"""The platform-neutral core: what the bot knows and stores, for every chat.

bot/core/conversation.py decides what each chat event asks of it (and who may ask); the
console calls it directly. People are `UserRef(platform, platform_user_id)`; a suggestion is
addressed by its id or by the bot message that carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from bot.core.blocklist import BlockList
from bot.core.i18n import supported
from bot.core.personalize import GlobalPrior, UserProfile, Weights, rank
from bot.core.profile_cache import DEFAULT_BUDGET_BYTES as DEFAULT_PROFILE_CACHE_BYTES
from bot.core.profile_cache import ProfileCache
from bot.core.ratelimit import RateLimit, RateLimiter
from bot.operations import metrics
from bot.store import (
    VERDICT_ACCEPT,
    VERDICT_REJECT,
    PersonSettings,
    Store,
    StoredSuggestion,
    StoreUnavailable,
)
from inference.engine import EngineBusy, InferenceEngine, Prediction
from inference.images import ImageRejected
from inference.vocab import normalize_hashtag

MAX_TAG_LENGTH = 64
# Hashtags per suggestion: five by default, as Instagram allows on a post since December 2025;
# a person may ask for 1 to 30 (/count), Instagram's old limit.
DEFAULT_TOP_K = 5
MAX_TAG_COUNT = 30
# Hashtags one person may hide: every photo's ranking reads them, so they stay a short list.
MAX_HIDDEN = 1000
# A person's own hashtags on one photo (typed in replies and in the caption, together): 30 is
# what Instagram allowed before it cut posts to five, so no real post needs more. The cap
# keeps one photo's answers small to store, to re-read after each answer, and to confirm in
# one message.
MAX_OWN_TAGS_PER_PHOTO = 30
OWN_TAG_SOURCES = ("typed", "caption")
THUMBS_UP, THUMBS_DOWN = "👍", "👎"
# What a reaction on a suggestion means; 👍 first, so it wins if both arrive at once.
REACTION_VERDICTS = {THUMBS_UP: VERDICT_ACCEPT, THUMBS_DOWN: VERDICT_REJECT}
TRENDING_WINDOW_DAYS = 7
DEFAULT_RATE_LIMIT = RateLimit()
PROFILE_MAX_AGE = 86_400.0  # seconds before a cached profile is rebuilt from the database


@dataclass(frozen=True)
class UserRef:
    platform: str  # "telegram", "discord", "console"
    user_id: str  # the platform's own id, as text
    # The language of the person's app for this event (Telegram's language_code, Discord's
    # locale), when the platform says; not part of who they are.
    locale: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Suggestion:
    id: int
    tags: list[tuple[str, float]]  # what to show, best first
    caption_tags: list[str]  # hashtags the person wrote in the caption, recorded as theirs

    @property
    def text(self) -> str:
        """Plain, copyable hashtags: `#beach #sunset ...`."""
        return hashtag_text(tag for tag, _ in self.tags)


@dataclass(frozen=True)
class OwnTags:
    saved: list[str]  # what is now stored as the person's own, in the order they wrote it
    left_out: int  # new hashtags that did not fit under MAX_OWN_TAGS_PER_PHOTO


class NotYourSuggestion(PermissionError):
    """Someone reacted to (or pressed a button on) another person's suggestion."""


class UnknownSuggestion(LookupError):
    """No suggestion with that id or reply message (deleted, or forgotten with /forget)."""


class RateLimited(RuntimeError):
    def __init__(self, retry_after: float):
        super().__init__(f"Too many photos at once; try again in {retry_after:.0f} s.")
        self.retry_after = retry_after


def hashtag_text(tags) -> str:
    return " ".join(f"#{tag}" for tag in tags)


def extract_hashtags(text: str | None) -> list[str]:
    """The #hashtags in a text, normalised, in order, without duplicates or absurd lengths."""
    found = (normalize_hashtag(tag) for tag in re.findall(r"#(\w+)", text or ""))
    return list(dict.fromkeys(tag for tag in found if 0 < len(tag) <= MAX_TAG_LENGTH))


class HashtagService:
    def __init__(
        self,
        engine: InferenceEngine,
        store: Store,
        *,
        weights: Weights | None = None,
        top_k: int = DEFAULT_TOP_K,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        profile_cache_bytes: int = DEFAULT_PROFILE_CACHE_BYTES,
        global_prior_ttl: float = 300.0,
        blocked: BlockList | None = None,
    ):
        """`rate_limit`: photos per person; None for none (the operator's own console).
        `blocked`: hashtags never suggested to anyone (the operator's veto)."""
        self.engine, self.store = engine, store
        self.blocked = blocked
        self.weights = weights or Weights()
        self.top_k = top_k
        self._rate_limiter = RateLimiter(rate_limit) if rate_limit else None
        # Each cached profile with the store's history_version it reflects, so answers stored
        # by another process sharing the database are noticed (one primary-key read a photo).
        self._profiles = ProfileCache(profile_cache_bytes)
        self._global_prior: GlobalPrior | None = None
        self._global_prior_time = 0.0
        self._global_prior_ttl = global_prior_ttl
        # suggestion id -> its lock, and how many hold or await it
        self._own_tags_locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self.accepting = True  # False while shutting down: adapters take no new work
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def vocabulary(self) -> list[str]:
        """The hashtags of the model serving now (a swapped-in head may have more)."""
        return list(self.engine.model.spec.vocabulary)

    # --- lifecycle -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def in_flight(self) -> AsyncIterator[None]:
        """The conversation wraps each piece of work (a photo, a button press) in this."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @property
    def idle(self) -> bool:
        """Nothing in flight: every event taken so far has been answered."""
        return self._idle.is_set()

    async def drain(self, timeout: float) -> bool:
        """Stop taking work and wait for what is in flight; False if the wait ran out."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- suggestions -------------------------------------------------------------------

    def admit_photos(self, user: UserRef, count: int) -> None:
        """Spend the person's rate limit on `count` photos, all or none, before anything is
        downloaded. Raises RateLimited with how long to wait."""
        wait = self._rate_limiter.acquire(user, count) if self._rate_limiter else 0.0
        if wait:
            raise RateLimited(wait)

    async def suggest(
        self,
        user: UserRef,
        images: Sequence[bytes],
        caption: str | None = None,
        record_caption: bool = True,
    ) -> Suggestion:
        """Hashtags for one post (a photo, or an album), personalised for `user`, who asked.

        An album is one post with one set of hashtags: each tag scores its best over the
        photos, and the post's embedding is their mean. Photos that cannot be read are
        skipped while at least one can. The caption's hashtags steer the ranking; they are
        stored as the person's own only with `record_caption` (they wrote the caption).
        Raises ImageRejected, EngineBusy or StoreUnavailable, each with a message meant for
        the person. The rate limit is the caller's to check first (admit_photos).
        """
        post = await self._predict_post(images)
        user_id = await self.store.user_id(user.platform, user.user_id)
        chosen = await self.store.person_settings(user_id)
        ranking = rank(
            post.scores,
            post.vocabulary,
            post.embedding,
            await self._profile(user_id),
            await self._prior(len(post.vocabulary)),
            self.weights,
            caption,
            (self.blocked.tags if self.blocked else frozenset()) | chosen.hidden,
        )
        count = self.tag_count(chosen)
        shown = ranking.top(count)
        entries = ranking.shown(count)
        suggestion_id = await self.store.add_suggestion(
            user_id,
            user.platform,
            post.embedding,
            entries,
            post.model_version,
            post.encoder,
        )
        metrics.SHOWN.labels(post.model_version).inc()
        caption_tags = extract_hashtags(caption)[:MAX_OWN_TAGS_PER_PHOTO] if record_caption else []
        if caption_tags:
            stored = StoredSuggestion(
                suggestion_id, user_id, user.platform, entries, None, None, 0.0, post.model_version
            )
            await self._record(stored, user_id, caption_tags, VERDICT_ACCEPT, "caption")
        metrics.PHOTOS.labels(user.platform).inc()
        return Suggestion(suggestion_id, shown, caption_tags)

    async def _predict_post(self, images: Sequence[bytes]) -> Prediction:
        """One prediction for a post; an album that straddles a head swap is asked again, so
        every photo of a post is scored by the same head."""
        for _ in range(3):
            outcomes = await asyncio.gather(
                *(self.engine.predict(image) for image in images), return_exceptions=True
            )
            predictions = [outcome for outcome in outcomes if isinstance(outcome, Prediction)]
            if not predictions:
                raise next(o for o in outcomes if isinstance(o, BaseException))
            for outcome in outcomes:  # anything but a bad image is not ours to swallow
                if isinstance(outcome, BaseException) and not isinstance(outcome, ImageRejected):
                    raise outcome
            if len({p.model_version for p in predictions}) == 1:
                break
        else:
            raise EngineBusy("the model is being replaced; please try again in a moment")
        if len(predictions) == 1:
            return predictions[0]
        scores = np.max([p.scores for p in predictions], axis=0)
        mean = np.mean([p.embedding.astype(np.float32) for p in predictions], axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return replace(predictions[0], scores=scores, embedding=mean)

    async def attach_reply(self, suggestion_id: int, chat_id: str, message_id: str) -> None:
        await self.store.attach_reply(suggestion_id, str(chat_id), str(message_id))

    async def find_by_reply(self, platform: str, chat_id: str, message_id: str) -> StoredSuggestion:
        found = await self.store.suggestion_for_reply(platform, str(chat_id), str(message_id))
        if found is None:
            raise UnknownSuggestion("That message holds no suggestion I remember.")
        return found

    # --- feedback (every write is committed before these return) -----------------------

    async def accept(
        self,
        user: UserRef,
        suggestion_id: int,
        tags: list[str] | None = None,
        source: str = "button",
    ) -> list[str]:
        """Accept some shown tags (default: all of them). Returns what was stored."""
        return await self._judge(user, suggestion_id, tags, VERDICT_ACCEPT, source)

    async def reject(
        self,
        user: UserRef,
        suggestion_id: int,
        tags: list[str] | None = None,
        source: str = "reaction",
    ) -> list[str]:
        return await self._judge(user, suggestion_id, tags, VERDICT_REJECT, source)

    async def add_own_tags(self, user: UserRef, suggestion_id: int, text: str) -> OwnTags:
        """The #hashtags a person typed for a photo, vocabulary or not, up to
        MAX_OWN_TAGS_PER_PHOTO of their own on it (the first ones they wrote)."""
        suggestion, user_id = await self.owned_suggestion(user, suggestion_id)
        typed = extract_hashtags(text)
        if not typed:
            return OwnTags([], 0)
        # Replies are handled concurrently: counting and writing must not interleave, or
        # five replies at once would each find room for 30.
        async with self._one_at_a_time(suggestion.id):
            already = await self.store.feedback_tags(suggestion.id, OWN_TAG_SOURCES)
            new = [tag for tag in typed if tag not in already]
            fits = new[: max(0, MAX_OWN_TAGS_PER_PHOTO - len(already))]
            if fits:  # tags already stored cost nothing more
                await self._record(suggestion, user_id, fits, VERDICT_ACCEPT, "typed")
        kept = set(fits)
        saved = [tag for tag in typed if tag in already or tag in kept]
        return OwnTags(saved, len(new) - len(fits))

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, suggestion_id: int) -> AsyncIterator[None]:
        """Answers to one photo in turn; the lock goes when nobody holds or awaits it."""
        lock, users = self._own_tags_locks.get(suggestion_id, (asyncio.Lock(), 0))
        self._own_tags_locks[suggestion_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._own_tags_locks[suggestion_id]
            if users == 1:
                del self._own_tags_locks[suggestion_id]
            else:
                self._own_tags_locks[suggestion_id] = (lock, users - 1)

    async def undo(
        self, user: UserRef, suggestion_id: int, source: str, verdict: int | None = None
    ) -> int:
        """Take back what one source said (a removed reaction); returns the rows removed."""
        suggestion, user_id = await self.owned_suggestion(user, suggestion_id)
        removed = await self.store.remove_feedback(suggestion.id, source, verdict)
        await self._refresh_profile(user_id, suggestion.id)
        metrics.FEEDBACK.labels(f"{source}_undo").inc()
        return removed

    async def react(
        self,
        user: UserRef,
        suggestion_id: int,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
    ) -> bool:
        """Reactions on a suggestion: 👍 saves every shown tag, 👎 rejects them, removing one
        undoes what it said. Other emoji mean nothing. Returns whether a reaction's verdict
        still stands afterwards (what the bot's 👌 on its reply shows), read from the store,
        so it holds whichever reactions the platform reports."""
        removed, added = set(removed), set(added)
        for emoji, verdict in REACTION_VERDICTS.items():
            if emoji in removed:
                await self.undo(user, suggestion_id, "reaction", verdict)
        verdict = next((v for e, v in REACTION_VERDICTS.items() if e in added), None)
        if verdict is not None:
            await self._judge(user, suggestion_id, None, verdict, "reaction")
        return await self.store.has_feedback(suggestion_id, "reaction")

    async def _judge(
        self, user: UserRef, suggestion_id: int, tags: list[str] | None, verdict: int, source: str
    ) -> list[str]:
        suggestion, user_id = await self.owned_suggestion(user, suggestion_id)
        shown = suggestion.shown_tags
        chosen = (
            shown if tags is None else [tag for tag in map(normalize_hashtag, tags) if tag in shown]
        )
        if chosen:
            await self._record(suggestion, user_id, chosen, verdict, source)
        return chosen

    async def owned_suggestion(
        self, user: UserRef, suggestion_id: int
    ) -> tuple[StoredSuggestion, int]:
        """The suggestion, if this person owns it. Nobody writes another person's history."""
        suggestion = await self.store.suggestion(suggestion_id)
        if suggestion is None:
            raise UnknownSuggestion("That suggestion no longer exists.")
        user_id = await self.store.find_user_id(user.platform, user.user_id)
        if user_id is None or user_id != suggestion.user_id or suggestion.platform != user.platform:
            raise NotYourSuggestion("Only the person who asked for these hashtags can choose them.")
        return suggestion, user_id

    async def _record(
        self,
        suggestion: StoredSuggestion,
        user_id: int,
        tags: list[str],
        verdict: int,
        source: str,
    ) -> None:
        new = await self.store.record_feedback(suggestion.id, user_id, tags, verdict, source)
        await self._refresh_profile(user_id, suggestion.id)
        metrics.FEEDBACK.labels(f"{source}_{'accept' if verdict > 0 else 'reject'}").inc()
        _count_quality(suggestion, new, verdict)

    # --- the person's own data ---------------------------------------------------------

    async def top_hashtags(self, user: UserRef, limit: int = 10) -> list[tuple[str, int]]:
        """The person's most accepted hashtags, with how many photos got each."""
        user_id = await self.store.find_user_id(user.platform, user.user_id)
        if user_id is None:
            return []
        history = await self.store.user_history(user_id)
        counts = Counter(
            tag for verdicts in history.verdicts for tag, verdict in verdicts.items() if verdict > 0
        )
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]

    async def person_settings(self, user: UserRef) -> PersonSettings:
        """What the person chose (/count, /language, /hide); defaults for someone new."""
        user_id = await self.store.find_user_id(user.platform, user.user_id)
        return PersonSettings() if user_id is None else await self.store.person_settings(user_id)

    def tag_count(self, chosen: PersonSettings) -> int:
        return chosen.tag_count or self.top_k

    def language(self, user: UserRef, chosen: PersonSettings) -> str | None:
        """The person's language: chosen with /language, else their app's, when supported."""
        return chosen.language or supported(user.locale)

    async def set_tag_count(self, user: UserRef, count: int) -> None:
        if not 1 <= count <= MAX_TAG_COUNT:
            raise ValueError(f"a person's hashtag count is 1 to {MAX_TAG_COUNT}, not {count}")
        await self.store.set_tag_count(await self._user_id(user), count)

    async def set_language(self, user: UserRef, language: str | None) -> None:
        """`language`: a supported code, or None for the app's language."""
        if language is not None and supported(language) != language:
            raise ValueError(f"not a language the bot speaks: {language!r}")
        await self.store.set_language(await self._user_id(user), language)

    async def hide(self, user: UserRef, tags: Iterable[str]) -> list[str]:
        """Never suggest these hashtags to the person again; returns them normalised."""
        tags = list(dict.fromkeys(normalize_hashtag(tag) for tag in tags))
        tags = [tag for tag in tags if 0 < len(tag) <= MAX_TAG_LENGTH]
        if tags:
            await self.store.hide_tags(await self._user_id(user), tags)
        return tags

    async def unhide(self, user: UserRef, tag: str) -> bool:
        """True when the hashtag was hidden and now is not."""
        user_id = await self.store.find_user_id(user.platform, user.user_id)
        return user_id is not None and await self.store.unhide_tag(user_id, normalize_hashtag(tag))

    async def _user_id(self, user: UserRef) -> int:
        return await self.store.user_id(user.platform, user.user_id)

    async def forget(self, user: UserRef) -> bool:
        """Delete everything stored about a person (settings too). True when there was
        something to delete."""
        user_id = await self.store.find_user_id(user.platform, user.user_id)
        if user_id is None:
            return False
        await self.store.forget_user(user_id)
        self._profiles.pop(user_id)
        return True

    # --- caches ------------------------------------------------------------------------

    async def _refresh_profile(self, user_id: int, suggestion_id: int) -> None:
        """Bring a cached profile up to date with one photo's answers: one small read and a few
        counts, however long the person's history."""
        cached = self._profiles.get(user_id)
        if cached is None:
            return
        profile, known_version = cached
        try:
            photo = await self.store.user_history(user_id, suggestion_id)
            version = await self.store.history_version(user_id)
        except StoreUnavailable:
            self._profiles.pop(user_id)  # the answer is stored; rebuild on the next photo
            return
        if version != known_version + 1:  # another change came in meanwhile: rebuild
            self._profiles.pop(user_id)
            return
        if photo.photos:
            # With whether personalisation won on it, or earned trust would stand still.
            won = photo.evidence[0] if photo.evidence else 0
            profile.set_photo(
                suggestion_id, photo.photo_times[0], photo.embeddings[0], photo.verdicts[0], won
            )
        else:
            profile.remove_photo(suggestion_id)
        self._profiles.put(user_id, profile, version)  # measured again: it may have grown

    async def _profile(self, user_id: int) -> UserProfile:
        version = await self.store.history_version(user_id)
        profile, known_version = self._profiles.get(user_id) or (None, -1)
        if profile is not None and time.time() - profile.now > PROFILE_MAX_AGE:
            profile = None  # time decay is computed from when it was built
        if profile is None or known_version != version:
            history = await self.store.user_history(user_id)
            # A long history takes a while (a second at 30,000 photos): not on the event loop,
            # where every other person's photo and answer would wait for it.
            profile = await asyncio.to_thread(
                UserProfile.from_history, history, time.time(), self.weights
            )
            self._profiles.put(user_id, profile, version)
        return profile

    async def _prior(self, vocabulary_size: int) -> GlobalPrior:
        """Everyone's accepted tags, refreshed every few minutes (it moves slowly)."""
        now = time.monotonic()
        if (
            self._global_prior is None
            or now - self._global_prior_time > self._global_prior_ttl
            or self._global_prior.vocabulary_size != vocabulary_size
        ):
            counts, photos = await self.store.accepted_tag_counts()
            prior = GlobalPrior(counts, photos, vocabulary_size)
            prior.trust_wins, prior.trust_losses = await self.store.personalisation_record()
            if self.weights.trending:
                since = time.time() - TRENDING_WINDOW_DAYS * 86_400
                prior.recent_counts, prior.recent_photos = await self.store.accepted_tag_counts(
                    since
                )
            self._global_prior, self._global_prior_time = prior, now
        return self._global_prior


def _count_quality(suggestion: StoredSuggestion, new_tags: list[str], verdict: int) -> None:
    """Per model version: shown hashtags newly accepted or rejected, and first ones accepted."""
    shown = suggestion.shown_tags
    judged = [tag for tag in new_tags if tag in shown]
    counter = metrics.ACCEPTED if verdict > 0 else metrics.REJECTED
    counter.labels(suggestion.model_version).inc(len(judged))
    if verdict > 0 and shown and shown[0] in judged:
        metrics.FIRST_ACCEPTED.labels(suggestion.model_version).inc()
