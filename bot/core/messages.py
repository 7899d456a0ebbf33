"""What the bot says, the same on every platform."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from bot.core.service import (
    MAX_OWN_TAGS_PER_PHOTO,
    NotYourSuggestion,
    OwnTags,
    RateLimited,
    UnknownSuggestion,
    hashtag_text,
)
from bot.operations import metrics
from bot.store import StoreUnavailable
from bot.store.records import DamagedRow
from inference.engine import EngineBusy
from inference.images import FORMATS_FOR_PEOPLE, ImageRejected

log = logging.getLogger(__name__)

HELP = (
    "Send me a photo and I reply with hashtags for it.\n"
    "• 👍 on my reply (or the 👍 button) saves the ticked hashtags as yours; 👎 marks them wrong; "
    "removing the reaction undoes it.\n"
    "• Tap a hashtag button to untick or tick it.\n"
    "• Reply to my message with your own #hashtags to add them, even ones I don't know.\n"
    "• /tags shows your most-used hashtags; /tags as a photo's caption or as a reply to a "
    "photo asks for hashtags (that is how it works in groups).\n"
    "• /forget deletes everything I stored about you.\n"
    "The more you tell me, the better my next suggestions fit you."
)
START = "Hi! " + HELP
NOT_A_PHOTO = f"I can only suggest hashtags for photos ({FORMATS_FOR_PEOPLE}). Send me one!"
UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."
NO_HISTORY = "You haven't saved any hashtags yet: send a photo, then 👍 my suggestions."
TOP_HINT = "Send a photo for new suggestions; reply to my message with #hashtags to add yours."
FORGET_CONFIRM = (
    "Delete every hashtag and photo fingerprint I stored about you? This cannot be undone."
)
FORGOTTEN = "Done: I deleted everything I stored about you."
NOTHING_TO_FORGET = "I had nothing stored about you."
FORGET_CANCELLED = "Nothing was deleted."
NO_HASHTAGS_IN_REPLY = "Write your hashtags with a # (like #sunset #myclub) and I'll save them."
SOMETHING_WENT_WRONG = "Sorry, something went wrong on my side. Please try again."
ONLY_THE_AUTHOR = "Only the person who asked for these hashtags can choose them."
ONLY_WHO_ASKED = "Only the person who asked can answer this; send /forget for your own data."
RESTARTING = "I'm restarting right now; please try again in a minute."


def saved(tags: list[str]) -> str:
    return f"✅ Saved: {hashtag_text(tags)}" if tags else "Nothing was selected."


def own_tags_saved(result: OwnTags) -> str:
    if not result.saved:
        return (
            f"This photo already has {MAX_OWN_TAGS_PER_PHOTO} of your own hashtags, the most "
            "I keep for one photo; nothing new was saved."
        )
    if not result.left_out:
        return saved(result.saved)
    # The note first: a message too long for the platform is cut at its end.
    return (
        f"{result.left_out} more did not fit: I keep at most {MAX_OWN_TAGS_PER_PHOTO} of your "
        f"own hashtags for one photo.\n{saved(result.saved)}"
    )


def rejected(tags: list[str]) -> str:
    return f"👎 Noted, not these: {hashtag_text(tags)}"


def top_hashtags(counts: list[tuple[str, int]]) -> str:
    if not counts:
        return NO_HISTORY
    listed = " ".join(f"#{tag} ({count})" for tag, count in counts)
    return f"Your most-used hashtags: {listed}\n{TOP_HINT}"


def for_error(error: BaseException) -> str | None:
    """The message for an error a person can act on; None for unexpected failures."""
    if isinstance(error, ImageRejected | RateLimited | StoreUnavailable):
        return str(error)
    if isinstance(error, EngineBusy):
        return "I'm very busy right now; please send the photo again in a minute."
    if isinstance(error, NotYourSuggestion):
        return ONLY_THE_AUTHOR
    if isinstance(error, DamagedRow):
        return (
            "I can't read that suggestion back (it is damaged in my database); send the photo "
            "again."
        )
    if isinstance(error, UnknownSuggestion):
        return "I no longer have that suggestion (it may have been deleted with /forget)."
    return None


@asynccontextmanager
async def explained(send: Callable[[str], Awaitable[object]]) -> AsyncIterator[None]:
    """Turn errors a person can act on into a message to them; let the others through.

    async with explained(reply):
        ...  # an ImageRejected here becomes reply("The file is empty.")
    """
    try:
        yield
    except Exception as error:
        text = for_error(error)
        if text is None:
            raise  # counted and logged by the adapter's error handler
        metrics.ERRORS.labels(type(error).__name__).inc()
        if isinstance(error, DamagedRow):  # the operator has a row to look at
            log.error("%s", error)
        await send(text)


def fit(text: str, limit: int) -> str:
    """`text` cut to what one message can hold (Telegram 4,096, Discord 2,000 characters),
    at a space when there is one near, with an ellipsis. Length is counted in UTF-16 units,
    as Telegram counts it (an emoji is two), which is never less than Discord's count."""
    if _utf16_length(text) <= limit:
        return text
    kept = text[: limit - 1]
    while _utf16_length(kept) > limit - 1:
        kept = kept[:-1]
    space = kept.rfind(" ")
    if space > len(kept) - 100:
        kept = kept[:space]
    return kept + "…"


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# Tag buttons carry their own state in their label ("✅ #beach" / "▫️ #beach"), so a keyboard
# needs no memory on the server and survives restarts.
TICKED, UNTICKED = "✅", "▫️"


def tag_label(tag: str, ticked: bool = True) -> str:
    return f"{TICKED if ticked else UNTICKED} #{tag}"


def flip_label(label: str) -> str:
    tag, ticked = parse_tag_label(label)
    return tag_label(tag, not ticked)


def parse_tag_label(label: str) -> tuple[str, bool]:
    mark, _, tag = label.partition(" #")
    return tag, mark == TICKED
