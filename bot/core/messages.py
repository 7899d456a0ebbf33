"""What the bot says, the same on every platform, in the person's language.

Each text is an English gettext message id: a constant marked with `N_` (translated where it
is said, with `t._(...)`), or a function of the person's catalogue `t` when it has numbers or
names in it. Placeholders are `{named}` and filled in after translation, so a translator can
move them. bot/core/i18n.py says where the catalogues are and how they are kept complete.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from bot.core.i18n import LANGUAGES, N_, Texts
from bot.core.service import (
    MAX_OWN_TAGS_PER_PHOTO,
    MAX_TAG_COUNT,
    NotYourSuggestion,
    OwnTags,
    RateLimited,
    UnknownSuggestion,
    hashtag_text,
)
from bot.operations import metrics
from bot.store import PersonSettings, StoreUnavailable
from bot.store.records import DamagedRow
from inference.engine import EngineBusy
from inference.images import FORMATS_FOR_PEOPLE, ImageRejected

log = logging.getLogger(__name__)


HELP = N_(
    "Send me a photo and I reply with hashtags for it.\n"
    "• 👍 on my reply (or the 👍 button) saves the ticked hashtags as yours; 👎 marks them "
    "wrong; removing the reaction undoes it.\n"
    "• Tap a hashtag button to untick or tick it; 🙈 hides the unticked ones from you for good.\n"
    "• Reply to my message with your own #hashtags to add them, even ones I don't know.\n"
    "• /tags shows your most-used hashtags; /tags as a photo's caption or as a reply to a "
    "photo asks for hashtags (that is how it works in groups).\n"
    "• /count 8 sets how many hashtags you get; /hide #tag, /unhide #tag and /hidden keep "
    "hashtags away from you; /language picks my language; /settings shows all of it.\n"
    "• /privacy says what I store; /forget deletes everything I stored about you.\n"
    "The more you tell me, the better my next suggestions fit you."
)
HI = N_("Hi!")
NOT_A_PHOTO = N_("I can only suggest hashtags for photos ({formats}). Send me one!")
UNKNOWN_COMMAND = N_("I don't know that command. /help lists what I can do.")
NO_HISTORY = N_("You haven't saved any hashtags yet: send a photo, then 👍 my suggestions.")
FORGET_CONFIRM = N_(
    "Delete every hashtag, setting and photo fingerprint I stored about you? This cannot be undone."
)
FORGOTTEN = N_("Done: I deleted everything I stored about you.")
NOTHING_TO_FORGET = N_("I had nothing stored about you.")
FORGET_CANCELLED = N_("Nothing was deleted.")
NO_HASHTAGS_IN_REPLY = N_("Write your hashtags with a # (like #sunset #myclub) and I'll save them.")
SOMETHING_WENT_WRONG = N_("Sorry, something went wrong on my side. Please try again.")
ONLY_THE_AUTHOR = N_("Only the person who asked for these hashtags can choose them.")
ONLY_WHO_ASKED = N_("Only the person who asked can answer this; send the command yourself.")
RESTARTING = N_("I'm restarting right now; please try again in a minute.")
BUSY = N_("I'm very busy right now; please send the photo again in a minute.")
DAMAGED = N_(
    "I can't read that suggestion back (it is damaged in my database); send the photo again."
)
GONE = N_("I no longer have that suggestion (it may have been deleted with /forget).")
NOTHING_SELECTED = N_("Nothing was selected.")
UNTICK_FIRST = N_("Untick the hashtags you never want to see, then press 🙈 again.")
HIDE_WHICH = N_("Which hashtag should I never suggest to you? For example: /hide #selfie")
UNHIDE_WHICH = N_("Which hashtag should I suggest again? For example: /unhide #selfie")
NOTHING_HIDDEN = N_("You haven't hidden any hashtags. /hide #tag hides one.")
CHOOSE_LANGUAGE = N_("Which language should I speak with you?")
LANGUAGE_AUTOMATIC = N_("Automatic (my app's language)")

# Button labels.
SAVE_TICKED = N_("👍 Save ticked")
HIDE_UNTICKED = N_("🙈 Hide unticked")
COPY = N_("📋 Copy")
DELETE_EVERYTHING = N_("Delete everything")
KEEP_IT = N_("Keep it")
LANGUAGE_BUTTON = N_("🌐 Language")

# What each command does: Telegram's command menu, Discord's slash commands, /help.
COMMAND_DESCRIPTIONS = {
    "start": N_("Say hello and explain what I do"),
    "help": N_("What I can do"),
    "tags": N_("Hashtags for a photo, or your own most-used hashtags"),
    "count": N_("How many hashtags you get for a photo"),
    "hide": N_("Never suggest this hashtag to you again"),
    "unhide": N_("Suggest a hidden hashtag again"),
    "hidden": N_("The hashtags you hid"),
    "settings": N_("Your settings: count, language, hidden hashtags"),
    "language": N_("The language I speak with you"),
    "privacy": N_("What I store about you, and how to delete it"),
    "forget": N_("Delete everything the bot stored about you"),
}
ARGUMENT_DESCRIPTIONS = {
    "count": N_("How many hashtags, 1 to 30"),
    "hide": N_("The hashtag, like #selfie"),
    "unhide": N_("The hashtag, like #selfie"),
    "language": N_("A language code: en, es, pt, de, fr, ru or it"),
}
IMAGE_ARGUMENT = N_("The image to suggest hashtags for")
SUGGEST_MENU = N_("Suggest hashtags")


def start(t: Texts) -> str:
    return f"{t._(HI)} {t._(HELP)}"


def not_a_photo(t: Texts) -> str:
    return t._(NOT_A_PHOTO).format(formats=FORMATS_FOR_PEOPLE)


def saved(t: Texts, tags: list[str]) -> str:
    if not tags:
        return t._(NOTHING_SELECTED)
    return t._("✅ Saved: {hashtags}").format(hashtags=hashtag_text(tags))


def own_tags_saved(t: Texts, result: OwnTags) -> str:
    if not result.saved:
        return t._(
            "This photo already has {limit} of your own hashtags, the most I keep for one "
            "photo; nothing new was saved."
        ).format(limit=MAX_OWN_TAGS_PER_PHOTO)
    if not result.left_out:
        return saved(t, result.saved)
    # The note first: a message too long for the platform is cut at its end.
    note = t.n_(
        "{count} more did not fit: I keep at most {limit} of your own hashtags for one photo.",
        "{count} more did not fit: I keep at most {limit} of your own hashtags for one photo.",
        result.left_out,
    ).format(count=result.left_out, limit=MAX_OWN_TAGS_PER_PHOTO)
    return f"{note}\n{saved(t, result.saved)}"


def rejected(t: Texts, tags: list[str]) -> str:
    return t._("👎 Noted, not these: {hashtags}").format(hashtags=hashtag_text(tags))


def top_hashtags(t: Texts, counts: list[tuple[str, int]]) -> str:
    if not counts:
        return t._(NO_HISTORY)
    listed = " ".join(f"#{tag} ({count})" for tag, count in counts)
    hint = t._("Send a photo for new suggestions; reply to my message with #hashtags to add yours.")
    return t._("Your most-used hashtags: {hashtags}").format(hashtags=listed) + f"\n{hint}"


def count_set(t: Texts, count: int) -> str:
    return t.n_(
        "From now on you get {count} hashtag per photo.",
        "From now on you get {count} hashtags per photo.",
        count,
    ).format(count=count)


def count_usage(t: Texts, count: int) -> str:
    """`/count` without a number, or with one the bot cannot take."""
    now = t.n_(
        "You get {count} hashtag per photo.", "You get {count} hashtags per photo.", count
    ).format(count=count)
    usage = t._("Send /count and a number from 1 to {most}, like /count 8.").format(
        most=MAX_TAG_COUNT
    )
    return f"{now} {usage}"


def hidden_now(t: Texts, tags: list[str]) -> str:
    return t._("I won't suggest {hashtags} to you again. /unhide brings one back.").format(
        hashtags=hashtag_text(tags)
    )


def too_many_hidden(t: Texts, limit: int) -> str:
    return t._("You can hide at most {limit} hashtags; /unhide some first.").format(limit=limit)


def not_hidden(t: Texts, tag: str) -> str:
    return t._("#{tag} wasn't hidden.").format(tag=tag)


def unhidden(t: Texts, tag: str) -> str:
    return t._("#{tag} can be suggested to you again.").format(tag=tag)


def hidden_list(t: Texts, tags: list[str]) -> str:
    if not tags:
        return t._(NOTHING_HIDDEN)
    return t._("Hashtags I never suggest to you: {hashtags}").format(hashtags=hashtag_text(tags))


def language_set(t: Texts, automatic: bool) -> str:
    """Said in the new language."""
    if automatic:
        return t._("I'll speak your app's language ({language}).").format(
            language=LANGUAGES[t.language]
        )
    return t._("I'll speak {language} with you.").format(language=LANGUAGES[t.language])


def unknown_language(t: Texts, asked: str) -> str:
    choices = ", ".join(f"{code} ({name})" for code, name in LANGUAGES.items())
    return t._("I don't speak “{asked}”. I can speak: {choices}.").format(
        asked=asked, choices=choices
    )


def settings(t: Texts, current: PersonSettings, count: int) -> str:
    lines = [
        t._("Your settings:"),
        t.n_(
            "• {count} hashtag per photo (/count)",
            "• {count} hashtags per photo (/count)",
            count,
        ).format(count=count),
        t._("• Language: {language} (/language)").format(language=LANGUAGES[t.language]),
        t.n_(
            "• {count} hidden hashtag (/hidden)",
            "• {count} hidden hashtags (/hidden)",
            len(current.hidden),
        ).format(count=len(current.hidden)),
        t._("Tap a number to change how many hashtags you get."),
    ]
    return "\n".join(lines)


def privacy(t: Texts, contact: str | None) -> str:
    text = t._(
        "What I store about you, and why:\n"
        "• Your platform user id, so your answers stay yours.\n"
        "• For each photo you send: its fingerprint (a list of numbers the model computes, "
        "from which the photo cannot be rebuilt), the hashtags I suggested, and which you "
        "accepted, rejected or added. Never the photo itself.\n"
        "• Your settings: how many hashtags, your language, the hashtags you hid.\n"
        "I keep it until you delete it. Only this bot's operator can see it. Your accepted "
        "hashtags shape your own suggestions; a hashtag reaches other people's suggestions "
        "only when many different people accepted it too, and no single person outweighs "
        "the others.\n"
        "/forget deletes all of it at once, including from everything trained afterwards."
    )
    if contact:
        text += "\n" + t._("Questions about your data: {contact}").format(contact=contact)
    return text


def for_error(t: Texts, error: BaseException) -> str | None:
    """The message for an error a person can act on; None for unexpected failures."""
    if isinstance(error, ImageRejected):
        return t._(error.template).format(**error.params)
    if isinstance(error, RateLimited):
        return t._("Too many photos at once; try again in {seconds} s.").format(
            seconds=f"{error.retry_after:.0f}"
        )
    if isinstance(error, StoreUnavailable):  # the store's own words, translated where fixed
        return t._(str(error)) if str(error) else t._(SOMETHING_WENT_WRONG)
    if isinstance(error, EngineBusy):
        return t._(BUSY)
    if isinstance(error, NotYourSuggestion):
        return t._(ONLY_THE_AUTHOR)
    if isinstance(error, DamagedRow):
        return t._(DAMAGED)
    if isinstance(error, UnknownSuggestion):
        return t._(GONE)
    return None


@asynccontextmanager
async def explained(t: Texts, send: Callable[[str], Awaitable[object]]) -> AsyncIterator[None]:
    """Turn errors a person can act on into a message to them, in their language; let the
    others through.

    async with explained(t, reply):
        ...  # an ImageRejected here becomes reply("The file is empty.")
    """
    try:
        yield
    except Exception as error:
        text = for_error(t, error)
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
