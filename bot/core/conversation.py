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
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.core import messages
from bot.core.messages import explained
from bot.core.ratelimit import RateLimit, RateLimiter
from bot.core.service import (
    REACTION_VERDICTS,
    THUMBS_UP,
    HashtagService,
    NotYourSuggestion,
    Suggestion,
    UnknownSuggestion,
    UserRef,
)
from bot.operations import metrics
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


@dataclass(frozen=True)
class Photo:
    """One image of a post, not yet downloaded."""

    size: int | None  # bytes, when the platform says so before the download
    download: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Command:
    name: str
    description: str  # what Discord's slash menu and /help say
    on_discord: bool = True  # Discord has no /start: a bot is added, not started


COMMANDS = (
    Command("start", "Say hello and explain what I do", on_discord=False),
    Command("help", "What I can do"),
    Command("tags", "Hashtags for a photo, or your own most-used hashtags"),
    Command("forget", "Delete everything the bot stored about you"),
)


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
class Forget:
    confirmed: bool
    owner: str  # the platform user id of the person who asked


def parse_button(data: str) -> Toggle | Save | Forget | None:
    """What a button's data asks for; None for anything the bot never made."""
    action, *fields = data.split("|")
    try:
        if action == "toggle" and len(fields) == 2:
            return Toggle(int(fields[0]), int(fields[1]))
        if action == "save" and len(fields) == 1:
            return Save(int(fields[0]))
    except ValueError:
        return None
    if action == "forget" and len(fields) == 2 and fields[0] in ("yes", "no") and fields[1]:
        return Forget(fields[0] == "yes", fields[1])
    return None


def suggestion_buttons(suggestion: Suggestion) -> list[Button]:
    """A ticked toggle per hashtag, then the save button."""
    toggles = [
        Button(messages.tag_label(tag), f"toggle|{suggestion.id}|{i}")
        for i, (tag, _) in enumerate(suggestion.tags)
    ]
    return [*toggles, Button(f"{THUMBS_UP} Save ticked", f"save|{suggestion.id}")]


def forget_buttons(owner: UserRef) -> list[Button]:
    return [
        Button("Delete everything", f"forget|yes|{owner.user_id}"),
        Button("Keep it", f"forget|no|{owner.user_id}"),
    ]


class Conversation:
    def __init__(
        self,
        service: HashtagService,
        platform: str,
        interaction_limit: RateLimit = INTERACTION_LIMIT,
    ):
        self.service, self.platform = service, platform
        self._interactions = RateLimiter(interaction_limit)
        self._noticed: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.commands: dict[str, Callable[[Chat, UserRef, str], Awaitable[None]]] = {
            "start": self._start,
            "help": self._help,
            "tags": self._top_hashtags,
            "forget": self._forget_prompt,
        }

    def user(self, platform_user_id: object) -> UserRef:
        return UserRef(self.platform, str(platform_user_id))

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

        if not photos:  # a menu on a message without an image, a file that is not one
            await chat.say(messages.NOT_A_PHOTO)
            return

        async def suggest() -> None:
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
                sent = await chat.say(suggestion.text, suggestion_buttons(suggestion), public=True)
            if sent is not None:
                await self.service.attach_reply(suggestion.id, sent.chat_id, sent.message_id)

        await self._handle("photo", chat.say, suggest)

    async def command(self, chat: Chat, sender: UserRef, name: str, argument: str = "") -> None:
        """A /command other than /tags on a photo (the adapter turns that into `photo`)."""
        handler = self.commands.get(name.lower())
        if handler is None:
            if chat.private:  # in a group it may well be another bot's
                await chat.say(messages.UNKNOWN_COMMAND)
            return
        await self._handle(f"/{name}", chat.say, lambda: handler(chat, sender, argument))

    async def not_a_photo(self, chat: Chat) -> None:
        """Anything else sent to the bot in a private chat: a sticker, a text, a file."""
        if chat.private:
            await chat.say(messages.NOT_A_PHOTO)

    async def reply(
        self, chat: Chat, sender: UserRef, to: MessageRef, to_bot: bool, text: str
    ) -> None:
        """A reply to a message: to the bot's suggestion, the person's own #hashtags."""
        if not to_bot:  # people talking to each other
            await self.not_a_photo(chat)
            return
        if not self._interaction_allowed(sender):
            return

        async def add_own_tags() -> None:
            suggestion = await self.service.find_by_reply(self.platform, to.chat_id, to.message_id)
            result = await self.service.add_own_tags(sender, suggestion.id, text)
            if result.saved or result.left_out:
                await chat.say(messages.own_tags_saved(result))
            else:
                await chat.say(messages.NO_HASHTAGS_IN_REPLY)

        await self._handle("reply", chat.say, add_own_tags)

    async def button(self, press: Press, presser: UserRef, data: str) -> None:
        action = parse_button(data)
        if action is None or not self._interaction_allowed(presser):
            await press.answer()  # made up, or too many: acknowledged, nothing done
            return

        async def notice(text: str) -> None:
            if not press.answered:
                await press.answer(notice=text)

        async def act() -> None:
            if isinstance(action, Forget):
                await self._forget_answer(press, presser, action)
            elif isinstance(action, Toggle):
                await self._toggle(press, presser, action)
            else:
                await self._save(press, presser, action)

        await self._handle("button", notice, act)

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

        async def react() -> None:
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
                    await message.notice(messages.ONLY_THE_AUTHOR)
                return
            await message.set_noted(noted)  # only now that the write has committed

        await self._handle("reaction", message.notice, react)

    # --- commands ------------------------------------------------------------------------

    async def _start(self, chat: Chat, sender: UserRef, argument: str) -> None:
        await chat.say(messages.START)

    async def _help(self, chat: Chat, sender: UserRef, argument: str) -> None:
        await chat.say(messages.HELP)

    async def _top_hashtags(self, chat: Chat, sender: UserRef, argument: str) -> None:
        await chat.say(messages.top_hashtags(await self.service.top_hashtags(sender)))

    async def _forget_prompt(self, chat: Chat, sender: UserRef, argument: str) -> None:
        await chat.say(messages.FORGET_CONFIRM, forget_buttons(sender))

    # --- buttons -------------------------------------------------------------------------

    async def _forget_answer(self, press: Press, presser: UserRef, action: Forget) -> None:
        if presser.user_id != action.owner:
            await press.answer(notice=messages.ONLY_WHO_ASKED)
            return
        if not action.confirmed:
            text = messages.FORGET_CANCELLED
        elif await self.service.forget(presser):
            text = messages.FORGOTTEN
        else:
            text = messages.NOTHING_TO_FORGET
        await press.answer(text=text, buttons=[])

    async def _toggle(self, press: Press, presser: UserRef, action: Toggle) -> None:
        await self.service.owned_suggestion(presser, action.suggestion_id)
        pressed = f"toggle|{action.suggestion_id}|{action.index}"
        if pressed not in (b.data for b in press.buttons):
            await press.answer()  # not a button of this message
            return
        flipped = [
            Button(messages.flip_label(b.label), b.data) if b.data == pressed else b
            for b in press.buttons
        ]
        await press.answer(buttons=flipped)

    async def _save(self, press: Press, presser: UserRef, action: Save) -> None:
        await self.service.owned_suggestion(presser, action.suggestion_id)
        labels = [b.label for b in press.buttons if b.data.startswith("toggle|")]
        ticked = [tag for tag, on in map(messages.parse_tag_label, labels) if on]
        if not ticked:
            await press.answer(notice=messages.saved([]))  # nothing stored, buttons stay
            return
        saved = await self.service.accept(presser, action.suggestion_id, ticked, source="button")
        if not saved:  # labels that name no shown hashtag
            await press.answer(notice=messages.saved([]))
            return
        # Shown only now that the write has committed.
        await press.answer(
            notice=messages.saved(saved),
            text=f"{press.text}\n{messages.saved(saved)}",
            buttons=[],
        )

    # --- rules for every event -----------------------------------------------------------

    async def _handle(
        self,
        event: str,
        say: Callable[[str], Awaitable[object]],
        work: Callable[[], Awaitable[None]],
    ) -> None:
        """Run one event's work: none while shutting down (the person is told to retry), in
        flight until it answered (a shutdown waits for it), errors a person can act on
        explained to them, and anything else logged and apologised for, never raised into
        the platform library."""
        if not self.service.accepting and not _STARTED.get():
            await say(messages.RESTARTING)
            return
        async with self.service.in_flight():
            try:
                async with explained(say):
                    await work()
            except Exception:
                metrics.ERRORS.labels("unexpected").inc()
                log.exception("a %s on %s failed", event, self.platform)
                try:
                    await say(messages.SOMETHING_WENT_WRONG)
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
