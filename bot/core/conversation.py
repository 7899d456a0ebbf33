"""What a chat does with each event, once for every platform.

A photo, a command, a reply, a button press and a reaction each arrive here as one call, with
who did it and a small object that can answer in that chat. Who may do what is decided here
and nowhere else: a suggestion belongs to whoever asked for it, only its owner's answers are
stored, only the person who asked for a /forget prompt can press its buttons, every photo of
an album costs one unit of the rate limit before anything is downloaded, and buttons and
reactions have a limit of their own. The Telegram and Discord adapters only translate their
events into these calls and render `Button`s and texts.

A new command is one method here and one line in `Conversation.commands` (with `COMMANDS`
describing it): Telegram routes every command by name, Discord makes a slash command of it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.core import messages
from bot.core.i18n import ENGLISH, LANGUAGES, Texts, supported, texts
from bot.core.messages import explained
from bot.core.ratelimit import RateLimit, RateLimiter
from bot.core.service import (
    MAX_HIDDEN,
    MAX_TAG_COUNT,
    REACTION_VERDICTS,
    HashtagService,
    NotYourSuggestion,
    Suggestion,
    UnknownSuggestion,
    UserRef,
    extract_hashtags,
)
from bot.operations import metrics
from bot.store import StoreUnavailable
from bot.store.records import DamagedRow
from inference.images import check_file_size

log = logging.getLogger(__name__)

# Presses, reactions and replies per person: generous for someone ticking through ten tags,
# tight enough that nobody can make the bot flood a group. Over it, events are dropped quietly.
INTERACTION_LIMIT = RateLimit(per_minute=60, burst=20)
NOTICES_REMEMBERED = 10_000  # (person, suggestion) pairs told "only the author" once already
# Set inside Conversation.started(): the event was accepted before any shutdown began.
_STARTED = contextvars.ContextVar("started", default=False)


@dataclass(frozen=True)
class MessageRef:
    chat_id: str
    message_id: str


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # what a press sends back (Telegram callback_data, Discord custom_id)
    # A button that copies this text to the clipboard instead (Telegram's copy-text button);
    # platforms without one leave it out: their message text is copyable as it is.
    copy: str | None = None


@dataclass(frozen=True)
class Photo:
    """One image of a post, not yet downloaded."""

    size: int | None  # bytes, when the platform says so before the download
    download: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Command:
    name: str
    on_discord: bool = True  # Discord has no /start: a bot is added, not started

    @property
    def description(self) -> str:
        """What the command menus say, as an English message id (translated per language)."""
        return messages.COMMAND_DESCRIPTIONS[self.name]

    @property
    def argument(self) -> str | None:
        """The description of the command's one argument, when it takes one."""
        return messages.ARGUMENT_DESCRIPTIONS.get(self.name)


COMMANDS = (
    Command("start", on_discord=False),
    Command("help"),
    Command("tags"),
    Command("count"),
    Command("hide"),
    Command("unhide"),
    Command("hidden"),
    Command("settings"),
    Command("language"),
    Command("privacy"),
    Command("forget"),
)
# The counts /settings offers as buttons (any 1 to 30 can be typed with /count).
COUNT_CHOICES = (3, 5, 8, 10, 15, 20, 30)
AUTOMATIC = "auto"  # the language button meaning "my app's language"
# Hashtags one /hide or /unhide takes: one message cannot make the bot write or say hundreds.
MAX_TAGS_PER_COMMAND = 30
# Commands that write the person's settings count against their interaction limit.
WRITING_COMMANDS = frozenset({"count", "hide", "unhide", "language"})
_COUNT = re.compile("[0-9]{1,2}")  # ASCII digits only, and never a number int() chokes on


class Chat(Protocol):
    """Where an event happened, and how to answer there."""

    private: bool  # a one-to-one chat, where everything is for the bot

    async def say(
        self, text: str, buttons: Sequence[Button] = (), public: bool = False
    ) -> MessageRef | None:
        """Answer the event. `public`: for everyone in the chat to see (a suggestion);
        otherwise it may be shown to the person alone where the platform can."""


class Press(Protocol):
    """A button press on one of the bot's messages: answered exactly once."""

    text: str  # the message the button is on, as it reads now
    buttons: list[Button]  # the buttons on it now, in order
    answered: bool

    async def answer(
        self,
        notice: str | None = None,
        text: str | None = None,
        buttons: Sequence[Button] | None = None,
    ) -> None:
        """Acknowledge the press: `notice` a short word to the presser, `text` and `buttons`
        the message's new content (None keeps it; no buttons removes them)."""


class ReactedMessage(Protocol):
    """The bot's message a reaction changed on."""

    async def notice(self, text: str) -> None:
        """A reply to the message, in its chat."""

    async def set_noted(self, noted: bool) -> None:
        """The bot's own 👌 on the message: the reaction's verdict is stored."""


@dataclass(frozen=True)
class Toggle:
    suggestion_id: int
    index: int


@dataclass(frozen=True)
class Save:
    suggestion_id: int


@dataclass(frozen=True)
class Hide:
    """Hide the suggestion's unticked hashtags from its owner for good."""

    suggestion_id: int


@dataclass(frozen=True)
class Forget:
    confirmed: bool
    owner: str  # the platform user id of the person who asked


@dataclass(frozen=True)
class SetCount:
    count: int
    owner: str


@dataclass(frozen=True)
class ShowLanguages:
    owner: str


@dataclass(frozen=True)
class SetLanguage:
    language: str | None  # None: the app's language
    owner: str


Action = Toggle | Save | Hide | Forget | SetCount | ShowLanguages | SetLanguage


def parse_button(data: str) -> Action | None:
    """What a button's data asks for; None for anything the bot never made."""
    action, *fields = data.split("|")
    try:
        if action == "toggle" and len(fields) == 2:
            return Toggle(int(fields[0]), int(fields[1]))
        if action in ("save", "hide") and len(fields) == 1:
            return (Save if action == "save" else Hide)(int(fields[0]))
        if action == "count" and len(fields) == 2 and fields[1]:
            count = int(fields[0])
            return SetCount(count, fields[1]) if 1 <= count <= MAX_TAG_COUNT else None
    except ValueError:
        return None
    if action == "forget" and len(fields) == 2 and fields[0] in ("yes", "no") and fields[1]:
        return Forget(fields[0] == "yes", fields[1])
    if action == "languages" and len(fields) == 1 and fields[0]:
        return ShowLanguages(fields[0])
    if action == "language" and len(fields) == 2 and fields[1]:
        if fields[0] == AUTOMATIC:
            return SetLanguage(None, fields[1])
        return SetLanguage(fields[0], fields[1]) if fields[0] in LANGUAGES else None
    return None


# Telegram's copy-text button copies at most this many characters.
COPY_LIMIT = 256


def copy_button(t: Texts, tags: Sequence[str]) -> Button:
    """Copies `tags` (whole hashtags, as many as fit); Telegram needs at least one character."""
    text = ""
    for tag in tags:  # whole hashtags only
        longer = f"{text} #{tag}".strip()
        if len(longer) > COPY_LIMIT:
            break
        text = longer
    return Button(t._(messages.COPY), "copy", copy=text or "#")


def suggestion_buttons(t: Texts, suggestion: Suggestion) -> list[Button]:
    """A ticked toggle per hashtag, then save, hide-unticked and copy."""
    toggles = [
        Button(messages.tag_label(tag), f"toggle|{suggestion.id}|{i}")
        for i, (tag, _) in enumerate(suggestion.tags)
    ]
    return [
        *toggles,
        Button(t._(messages.SAVE_TICKED), f"save|{suggestion.id}"),
        Button(t._(messages.HIDE_UNTICKED), f"hide|{suggestion.id}"),
        copy_button(t, [tag for tag, _ in suggestion.tags]),
    ]


def forget_buttons(t: Texts, owner: UserRef) -> list[Button]:
    return [
        Button(t._(messages.DELETE_EVERYTHING), f"forget|yes|{owner.user_id}"),
        Button(t._(messages.KEEP_IT), f"forget|no|{owner.user_id}"),
    ]


def settings_buttons(t: Texts, owner: UserRef, count: int) -> list[Button]:
    counts = [
        Button(f"✓ {n}" if n == count else str(n), f"count|{n}|{owner.user_id}")
        for n in COUNT_CHOICES
    ]
    return [*counts, Button(t._(messages.LANGUAGE_BUTTON), f"languages|{owner.user_id}")]


def language_buttons(t: Texts, owner: UserRef) -> list[Button]:
    named = [Button(name, f"language|{code}|{owner.user_id}") for code, name in LANGUAGES.items()]
    automatic = Button(t._(messages.LANGUAGE_AUTOMATIC), f"language|{AUTOMATIC}|{owner.user_id}")
    return [*named, automatic]


def ticked_tags(buttons: Sequence[Button]) -> tuple[list[str], list[str]]:
    """(ticked, unticked) hashtags, as the keyboard's toggle labels say."""
    labels = [messages.parse_tag_label(b.label) for b in buttons if b.data.startswith("toggle|")]
    return [tag for tag, on in labels if on], [tag for tag, on in labels if not on]


class Conversation:
    def __init__(
        self,
        service: HashtagService,
        platform: str,
        interaction_limit: RateLimit = INTERACTION_LIMIT,
        privacy_contact: str | None = None,
    ):
        self.service, self.platform = service, platform
        self.privacy_contact = privacy_contact
        self._interactions = RateLimiter(interaction_limit)
        self._noticed: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.commands: dict[str, Callable[[Chat, UserRef, str, Texts], Awaitable[None]]] = {
            "start": self._start,
            "help": self._help,
            "tags": self._top_hashtags,
            "count": self._count,
            "hide": self._hide,
            "unhide": self._unhide,
            "hidden": self._hidden,
            "settings": self._settings,
            "language": self._language,
            "privacy": self._privacy,
            "forget": self._forget_prompt,
        }

    def user(self, platform_user_id: object, locale: str | None = None) -> UserRef:
        """A person; `locale`: their app's language for this event, when the platform says."""
        return UserRef(self.platform, str(platform_user_id), locale)

    async def texts_for(self, person: UserRef) -> Texts:
        """The catalogue of the person's language: chosen, else their app's, else English.

        A database that cannot be read right now leaves the app's language: the event's own
        work then says what is wrong, in it.
        """
        try:
            chosen = await self.service.person_settings(person)
        except (StoreUnavailable, DamagedRow) as error:
            log.warning("speaking the app's language: the settings cannot be read (%s)", error)
            return texts(supported(person.locale))
        return texts(self.service.language(person, chosen))

    # --- events --------------------------------------------------------------------------

    async def photo(
        self,
        chat: Chat,
        requester: UserRef,
        photos: Sequence[Photo],
        caption: str | None = None,
        author: UserRef | None = None,
    ) -> None:
        """Hashtags for a post, for the person who asked (`requester`); `author`, when
        someone else's post is asked about, wrote its caption, which then is not recorded
        as anyone's answer."""

        async def suggest(t: Texts) -> None:
            if not photos:  # a menu on a message without an image, a file that is not one
                await chat.say(messages.not_a_photo(t))
                return
            for photo in photos:  # nothing is downloaded when any of them is too big
                if photo.size is not None:
                    check_file_size(photo.size, self.service.engine.limits)
            self.service.admit_photos(requester, len(photos))
            with metrics.STAGE_SECONDS.labels("download").time():
                images = [await photo.download() for photo in photos]
            suggestion = await self.service.suggest(
                requester, images, caption, record_caption=author in (None, requester)
            )
            with metrics.STAGE_SECONDS.labels("reply").time():
                sent = await chat.say(
                    suggestion.text, suggestion_buttons(t, suggestion), public=True
                )
            if sent is not None:
                await self.service.attach_reply(suggestion.id, sent.chat_id, sent.message_id)

        await self._handle("photo", requester, chat.say, suggest)

    async def command(self, chat: Chat, sender: UserRef, name: str, argument: str = "") -> None:
        """A /command other than /tags on a photo (the adapter turns that into `photo`)."""
        handler = self.commands.get(name.lower())
        if handler is None:
            if chat.private:  # in a group it may well be another bot's
                await chat.say((await self.texts_for(sender))._(messages.UNKNOWN_COMMAND))
            return
        if name.lower() in WRITING_COMMANDS and not self._interaction_allowed(sender):
            return  # too many: ignored, as presses and reactions are
        argument = argument.strip()
        await self._handle(
            f"/{name}", sender, chat.say, lambda t: handler(chat, sender, argument, t)
        )

    async def not_a_photo(self, chat: Chat, sender: UserRef) -> None:
        """Anything else sent to the bot in a private chat: a sticker, a text, a file."""
        if chat.private:
            await chat.say(messages.not_a_photo(await self.texts_for(sender)))

    async def reply(
        self, chat: Chat, sender: UserRef, to: MessageRef, to_bot: bool, text: str
    ) -> None:
        """A reply to a message: to the bot's suggestion, the person's own #hashtags."""
        if not to_bot:  # people talking to each other
            await self.not_a_photo(chat, sender)
            return
        if not self._interaction_allowed(sender):
            return

        async def add_own_tags(t: Texts) -> None:
            suggestion = await self.service.find_by_reply(self.platform, to.chat_id, to.message_id)
            result = await self.service.add_own_tags(sender, suggestion.id, text)
            if result.saved or result.left_out:
                await chat.say(messages.own_tags_saved(t, result))
            else:
                await chat.say(t._(messages.NO_HASHTAGS_IN_REPLY))

        await self._handle("reply", sender, chat.say, add_own_tags)

    async def button(self, press: Press, presser: UserRef, data: str) -> None:
        action = parse_button(data)
        if action is None or not self._interaction_allowed(presser):
            await press.answer()  # made up, or too many: acknowledged, nothing done
            return

        async def notice(text: str) -> None:
            if not press.answered:
                await press.answer(notice=text)

        async def act(t: Texts) -> None:
            if isinstance(action, Toggle):
                await self._toggle(press, presser, action, t)
            elif isinstance(action, Save):
                await self._save(press, presser, action, t)
            elif isinstance(action, Hide):
                await self._hide_unticked(press, presser, action, t)
            elif presser.user_id != action.owner:  # a prompt someone else asked for
                await press.answer(notice=t._(messages.ONLY_WHO_ASKED))
            elif isinstance(action, Forget):
                await self._forget_answer(press, presser, action, t)
            elif isinstance(action, SetCount):
                chosen = await self.service.person_settings(presser)
                if self.service.tag_count(chosen) == action.count:
                    await press.answer()  # already so: the message would not change
                    return
                await self.service.set_tag_count(presser, action.count)
                text, buttons = await self._settings_message(presser, t)
                await press.answer(text=text, buttons=buttons)
            elif isinstance(action, ShowLanguages):
                await press.answer(
                    text=t._(messages.CHOOSE_LANGUAGE), buttons=language_buttons(t, presser)
                )
            else:
                await press.answer(text=await self._choose_language(presser, action.language))

        await self._handle("button", presser, notice, act)

    async def reaction(
        self,
        message: ReactedMessage,
        reactor: UserRef,
        on: MessageRef,
        added: set[str],
        removed: set[str],
    ) -> None:
        """👍 saves every shown tag, 👎 rejects them, removing the reaction undoes it; any
        other emoji, and anyone's reaction on another person's suggestion, stores nothing."""
        if not (added | removed) & REACTION_VERDICTS.keys() or not self.service.accepting:
            return
        if not self._interaction_allowed(reactor):
            return

        async def react(t: Texts) -> None:
            try:
                suggestion = await self.service.find_by_reply(
                    self.platform, on.chat_id, on.message_id
                )
            except UnknownSuggestion:
                return  # a reaction to some other message
            try:
                noted = await self.service.react(reactor, suggestion.id, added, removed)
            except NotYourSuggestion:
                if self._first_notice(reactor, suggestion.id):
                    await message.notice(t._(messages.ONLY_THE_AUTHOR))
                return
            await message.set_noted(noted)  # only now that the write has committed

        await self._handle("reaction", reactor, message.notice, react)

    # --- commands ------------------------------------------------------------------------

    async def _start(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        await chat.say(messages.start(t))

    async def _help(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        await chat.say(t._(messages.HELP))

    async def _top_hashtags(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        await chat.say(messages.top_hashtags(t, await self.service.top_hashtags(sender)))

    async def _count(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        if _COUNT.fullmatch(argument) and 1 <= int(argument) <= MAX_TAG_COUNT:
            await self.service.set_tag_count(sender, int(argument))
            await chat.say(messages.count_set(t, int(argument)))
            return
        count = self.service.tag_count(await self.service.person_settings(sender))
        await chat.say(messages.count_usage(t, count))

    async def _hide(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        tags = _hashtags(argument)
        if not tags:
            await chat.say(t._(messages.HIDE_WHICH))
        elif not await self._room_to_hide(sender, tags):
            await chat.say(messages.too_many_hidden(t, MAX_HIDDEN))
        else:
            await chat.say(messages.hidden_now(t, await self.service.hide(sender, tags)))

    async def _unhide(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        tags = _hashtags(argument)
        if not tags:
            await chat.say(t._(messages.UNHIDE_WHICH))
            return
        lines = [
            messages.unhidden(t, tag)
            if await self.service.unhide(sender, tag)
            else messages.not_hidden(t, tag)
            for tag in tags
        ]
        await chat.say("\n".join(lines))  # one answer, however many hashtags

    async def _hidden(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        chosen = await self.service.person_settings(sender)
        await chat.say(messages.hidden_list(t, sorted(chosen.hidden)))

    async def _settings(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        await chat.say(*await self._settings_message(sender, t))

    async def _settings_message(self, person: UserRef, t: Texts) -> tuple[str, list[Button]]:
        """The /settings message as it reads now, with its buttons."""
        chosen = await self.service.person_settings(person)
        count = self.service.tag_count(chosen)
        return messages.settings(t, chosen, count), settings_buttons(t, person, count)

    async def _language(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        if not argument:
            await chat.say(t._(messages.CHOOSE_LANGUAGE), language_buttons(t, sender))
            return
        automatic = argument.lower() == AUTOMATIC
        language = None if automatic else supported(argument)
        if language is None and not automatic:
            await chat.say(messages.unknown_language(t, argument[:40]))
            return
        await chat.say(await self._choose_language(sender, language))

    async def _choose_language(self, person: UserRef, language: str | None) -> str:
        """Keep the person's language (None: their app's); the confirmation, in it."""
        await self.service.set_language(person, language)
        return messages.language_set(texts(language or person.locale), language is None)

    async def _privacy(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        await chat.say(messages.privacy(t, self.privacy_contact))

    async def _forget_prompt(self, chat: Chat, sender: UserRef, argument: str, t: Texts) -> None:
        await chat.say(t._(messages.FORGET_CONFIRM), forget_buttons(t, sender))

    # --- buttons -------------------------------------------------------------------------

    async def _forget_answer(self, press: Press, presser: UserRef, action: Forget, t: Texts):
        if not action.confirmed:
            text = t._(messages.FORGET_CANCELLED)
        elif await self.service.forget(presser):
            text = t._(messages.FORGOTTEN)
        else:
            text = t._(messages.NOTHING_TO_FORGET)
        await press.answer(text=text, buttons=[])

    async def _toggle(self, press: Press, presser: UserRef, action: Toggle, t: Texts) -> None:
        await self.service.owned_suggestion(presser, action.suggestion_id)
        pressed = f"toggle|{action.suggestion_id}|{action.index}"
        if pressed not in (b.data for b in press.buttons):
            await press.answer()  # not a button of this message
            return
        flipped = [
            Button(messages.flip_label(b.label), b.data) if b.data == pressed else b
            for b in press.buttons
        ]
        ticked, _ = ticked_tags(flipped)  # the copy button copies what is ticked
        flipped = [copy_button(t, ticked) if b.copy is not None else b for b in flipped]
        await press.answer(buttons=flipped)

    async def _save(self, press: Press, presser: UserRef, action: Save, t: Texts) -> None:
        await self.service.owned_suggestion(presser, action.suggestion_id)
        ticked, _ = ticked_tags(press.buttons)
        if not ticked:
            await press.answer(notice=messages.saved(t, []))  # nothing stored, buttons stay
            return
        saved = await self.service.accept(presser, action.suggestion_id, ticked, source="button")
        if not saved:  # labels that name no shown hashtag
            await press.answer(notice=messages.saved(t, []))
            return
        # Shown only now that the write has committed.
        await press.answer(
            notice=messages.saved(t, saved),
            text=f"{press.text}\n{messages.saved(t, saved)}",
            buttons=[],
        )

    async def _hide_unticked(self, press: Press, presser: UserRef, action: Hide, t: Texts):
        await self.service.owned_suggestion(presser, action.suggestion_id)
        ticked, unticked = ticked_tags(press.buttons)
        if not unticked:
            await press.answer(notice=t._(messages.UNTICK_FIRST))
            return
        if not await self._room_to_hide(presser, unticked):
            await press.answer(notice=messages.too_many_hidden(t, MAX_HIDDEN))
            return
        hidden = await self.service.hide(presser, unticked)
        kept = [
            copy_button(t, ticked) if b.copy is not None else b
            for b in press.buttons
            if not (b.data.startswith("toggle|") and messages.parse_tag_label(b.label)[0] in hidden)
        ]
        await press.answer(notice=messages.hidden_now(t, hidden), buttons=kept)

    # --- rules for every event -----------------------------------------------------------

    async def _handle(
        self,
        event: str,
        person: UserRef,
        say: Callable[[str], Awaitable[object]],
        work: Callable[[Texts], Awaitable[None]],
    ) -> None:
        """Run one event's work, in the person's language: none while shutting down (the
        person is told to retry), in flight until it answered (a shutdown waits for it),
        errors a person can act on explained to them, and anything else logged and
        apologised for, never raised into the platform library."""
        if not self.service.accepting and not _STARTED.get():
            await say(texts(supported(person.locale))._(messages.RESTARTING))
            return
        async with self.service.in_flight():
            t = ENGLISH
            try:
                t = await self.texts_for(person)
                async with explained(t, say):
                    await work(t)
            except Exception:
                metrics.ERRORS.labels("unexpected").inc()
                log.exception("a %s on %s failed", event, self.platform)
                try:
                    await say(t._(messages.SOMETHING_WENT_WRONG))
                except Exception as error:  # the platform is unreachable too
                    log.warning("could not tell the person about the failure: %s", error)

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[None]:
        """Work that is under way before its event is handled here (an album, whose photos
        arrive one by one): a shutdown waits for it, and it is finished, not refused."""
        token = _STARTED.set(True)
        try:
            async with self.service.in_flight():
                yield
        finally:
            _STARTED.reset(token)

    async def _room_to_hide(self, person: UserRef, tags: Sequence[str]) -> bool:
        hidden = (await self.service.person_settings(person)).hidden
        return len(hidden | set(tags)) <= MAX_HIDDEN

    def _interaction_allowed(self, person: UserRef) -> bool:
        return self._interactions.acquire(person) == 0.0

    def _first_notice(self, person: UserRef, suggestion_id: int) -> bool:
        """True the first time this person is told about this suggestion (within memory)."""
        key = (person.user_id, suggestion_id)
        if key in self._noticed:
            return False
        self._noticed[key] = None
        if len(self._noticed) > NOTICES_REMEMBERED:
            self._noticed.popitem(last=False)
        return True


def _hashtags(argument: str) -> list[str]:
    """The hashtags of a command's argument, written with or without a #."""
    words = argument.split()[:MAX_TAGS_PER_COMMAND]
    return extract_hashtags(" ".join(f"#{word.lstrip('#')}" for word in words))
