"""The Telegram adapter: python-telegram-bot updates in, Conversation calls, replies out.

It holds no conversation logic (bot/core/conversation.py does). Per update it finds the
photo(s), the person and the message concerned, and renders what the conversation says:
plain copyable hashtags plus an inline keyboard (a toggle per tag, and 👍 to save the ticked
ones). The selection lives in the keyboard itself, so no state is kept between presses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from telegram import (
    Bot,
    BotCommand,
    CallbackQuery,
    CopyTextButton,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    PhotoSize,
    ReactionTypeEmoji,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, NetworkError, TimedOut
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    MessageReactionHandler,
    filters,
)

from bot.core.conversation import COMMANDS, Button, Conversation, MessageRef, Photo
from bot.core.i18n import DEFAULT_LANGUAGE, LANGUAGES, texts
from bot.core.messages import fit
from bot.core.service import HashtagService
from bot.operations import metrics
from inference.images import ImageRejected

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "telegram"
ALLOWED_UPDATES = ["message", "callback_query", "message_reaction"]
ALBUM_WAIT_SECONDS = 1.0  # an album arrives as separate updates, close together
NOTED = "👌"
SEND_RETRIES = 3
MESSAGE_LIMIT = 4096  # characters in one message (UTF-16 code units)
NOTICE_LIMIT = 200  # characters in a button press's notice (answerCallbackQuery)


def build_application(
    service: HashtagService,
    token: str,
    api_url: str | None = None,
    privacy_contact: str | None = None,
) -> Application:
    builder = (
        Application.builder()
        .token(token)
        .concurrent_updates(True)  # many people at once; their photos meet in the engine
        .rate_limiter(AIORateLimiter(max_retries=SEND_RETRIES))  # honours 429 retry_after
    )
    if api_url:  # a self-hosted Bot API server (or the tests' fake one)
        api_url = api_url.rstrip("/")
        builder = builder.base_url(f"{api_url}/bot").base_file_url(f"{api_url}/file/bot")
    application = builder.build()
    logging.getLogger("telegram.request.BaseRequest").addFilter(_without_traceback)
    conversation = Conversation(service, PLATFORM, privacy_contact=privacy_contact)
    TelegramAdapter(conversation).register(application)
    return application


async def publish_commands(bot: Bot) -> None:
    """The command menu, in every language the bot speaks: Telegram shows each person the
    list for their app's language, and the English one to everyone else."""
    for language in LANGUAGES:
        t = texts(language)
        commands = [BotCommand(c.name, t._(c.description)) for c in COMMANDS]
        code = None if language == DEFAULT_LANGUAGE else language
        try:
            await bot.set_my_commands(commands, language_code=code)
        except (BadRequest, NetworkError) as error:  # the menu is a nicety: carry on
            log.warning("could not publish the %s command menu: %s", language, error)


def _without_traceback(record: logging.LogRecord) -> bool:
    """PTB logs an answer that is not JSON (a web server's 404 page: TELEGRAM_API_URL is not a
    Bot API) with the traceback of json.loads; the bot then says what it means in one line."""
    if record.exc_info and isinstance(record.exc_info[1], json.JSONDecodeError):
        record.exc_info = record.exc_text = None
    return True


class TelegramAdapter:
    def __init__(self, conversation: Conversation):
        self.conversation = conversation
        self.min_side = conversation.service.engine.model.spec.input_side
        self._albums: dict[tuple[int, str], list[Message]] = defaultdict(list)

    def register(self, app: Application) -> None:
        image = filters.PHOTO | filters.Document.IMAGE
        asks_for_tags = filters.CaptionRegex(r"^/tags(@\w+)?(\s|$)")
        private = filters.ChatType.PRIVATE
        app.add_handler(MessageHandler(image & (private | asks_for_tags), self.photo))
        app.add_handler(MessageHandler(filters.COMMAND, self.command))
        app.add_handler(MessageHandler(filters.REPLY & filters.TEXT, self.reply))
        app.add_handler(MessageHandler(private, self.not_a_photo))
        app.add_handler(CallbackQueryHandler(self.button))
        app.add_handler(MessageReactionHandler(self.reaction))
        app.add_error_handler(self.on_error)

    async def photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if not message.media_group_id:
            await self._suggest(message, [message])
            return
        key = (message.chat_id, message.media_group_id)
        self._albums[key].append(message)
        if len(self._albums[key]) > 1:
            return  # the album's first photo answers for all of them
        async with self.conversation.started():  # a shutdown now waits for the whole album
            await asyncio.sleep(ALBUM_WAIT_SECONDS)
            await self._suggest(message, self._albums.pop(key))

    async def _suggest(self, message: Message, photos: list[Message]) -> None:
        caption = next((photo.caption for photo in photos if photo.caption), None)
        await self.conversation.photo(
            _Chat(message), self._sender(message), self._photos(photos), _without_command(caption)
        )

    async def command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        word, _, argument = (message.text or "").partition(" ")
        name, _, addressee = word[1:].partition("@")
        if addressee and addressee.lower() != (context.bot.username or "").lower():
            return  # another bot's command, in a group
        replied = message.reply_to_message
        if name == "tags" and replied and (replied.photo or _is_image_document(replied)):
            await self.conversation.photo(
                _Chat(message),
                self._sender(message),
                self._photos([replied]),
                replied.caption,
                author=self._sender(replied),
            )
            return
        await self.conversation.command(_Chat(message), self._sender(message), name, argument)

    async def reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        replied = message.reply_to_message
        to_bot = replied.from_user is not None and replied.from_user.id == context.bot.id
        await self.conversation.reply(
            _Chat(message),
            self._sender(message),
            MessageRef(str(replied.chat_id), str(replied.message_id)),
            to_bot,
            message.text,
        )

    async def not_a_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        await self.conversation.not_a_photo(_Chat(message), self._sender(message))

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        presser = self.conversation.user(query.from_user.id, query.from_user.language_code)
        await self.conversation.button(_Press(query), presser, query.data or "")

    async def reaction(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.message_reaction
        if change.user is None:  # an anonymous admin or a channel: nobody to credit
            return
        old, new = _emojis(change.old_reaction), _emojis(change.new_reaction)
        await self.conversation.reaction(
            _ReactedMessage(context.bot, change.chat.id, change.message_id),
            self.conversation.user(change.user.id, change.user.language_code),
            MessageRef(str(change.chat.id), str(change.message_id)),
            added=new - old,
            removed=old - new,
        )

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """What fails outside the conversation (in this adapter, or PTB): logged (the logging
        setup redacts tokens) and counted; the bot carries on."""
        metrics.ERRORS.labels("unexpected").inc()
        log.error("update failed: %s", context.error, exc_info=context.error)

    def _sender(self, message: Message):
        person = message.from_user
        return self.conversation.user(person.id, person.language_code)

    def _photos(self, messages: list[Message]) -> list[Photo]:
        return [self._photo(message) for message in messages]

    def _photo(self, message: Message) -> Photo:
        """The smallest size that covers the model's input, downloaded only when asked."""
        if message.photo:
            chosen = smallest_photo_at_least(message.photo, self.min_side)
            file_id, file_size = chosen.file_id, chosen.file_size
        else:
            file_id, file_size = message.document.file_id, message.document.file_size

        async def download() -> bytes:
            try:
                telegram_file = await _send(lambda: message.get_bot().get_file(file_id), True)
                return bytes(await _send(telegram_file.download_as_bytearray, True))
            except BadRequest as error:  # e.g. "File is too big"
                raise ImageRejected(
                    "Telegram would not hand me that file ({reason}).", reason=error.message
                ) from None

        return Photo(file_size, download)


class _Chat:
    """Answers go as replies to the message (quoted in private chats too)."""

    def __init__(self, message: Message):
        self.message = message
        self.private = message.chat.type == ChatType.PRIVATE

    async def say(
        self, text: str, buttons: Sequence[Button] = (), public: bool = False
    ) -> MessageRef:
        markup, text = _keyboard(buttons) if buttons else None, fit(text, MESSAGE_LIMIT)
        sent = await _send(
            lambda: self.message.reply_text(text, do_quote=True, reply_markup=markup)
        )
        return MessageRef(str(sent.chat_id), str(sent.message_id))


class _Press:
    def __init__(self, query: CallbackQuery):
        self.query = query
        message = query.message if isinstance(query.message, Message) else None
        self.text = (message.text or "") if message else ""
        markup = message.reply_markup if message else None
        self.buttons = [
            Button(
                button.text,
                button.callback_data or ("copy" if button.copy_text else ""),
                button.copy_text.text if button.copy_text else None,
            )
            for row in (markup.inline_keyboard if markup else ())
            for button in row
        ]
        self.answered = False

    async def answer(
        self,
        notice: str | None = None,
        text: str | None = None,
        buttons: Sequence[Button] | None = None,
    ) -> None:
        self.answered = True
        await self.query.answer(fit(notice, NOTICE_LIMIT) if notice else None)
        markup = None if buttons is None else _keyboard(buttons)
        if text is not None:
            text = fit(text, MESSAGE_LIMIT)
            await _send(lambda: self.query.edit_message_text(text, reply_markup=markup))
        elif buttons is not None:
            await _send(lambda: self.query.edit_message_reply_markup(markup))


class _ReactedMessage:
    def __init__(self, bot, chat_id: int, message_id: int):
        self.bot, self.chat_id, self.message_id = bot, chat_id, message_id

    async def notice(self, text: str) -> None:
        text = fit(text, MESSAGE_LIMIT)
        await _send(
            lambda: self.bot.send_message(self.chat_id, text, reply_to_message_id=self.message_id)
        )

    async def set_noted(self, noted: bool) -> None:
        await _send(
            lambda: self.bot.set_message_reaction(
                self.chat_id, self.message_id, NOTED if noted else None
            ),
            True,
        )


def smallest_photo_at_least(sizes: tuple[PhotoSize, ...], min_side: int) -> PhotoSize:
    """The cheapest download that still covers the model's input; the largest otherwise."""
    ordered = sorted(sizes, key=lambda size: size.width * size.height)
    return next((size for size in ordered if min(size.width, size.height) >= min_side), ordered[-1])


def _keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup:
    """Hashtag toggles and languages two to a row, then the other buttons on one row."""
    paired = [b for b in buttons if b.data.startswith(("toggle|", "language|"))]
    others = [b for b in buttons if b not in paired]
    rows = [paired[i : i + 2] for i in range(0, len(paired), 2)] + ([others] if others else [])
    return InlineKeyboardMarkup([[_inline_button(b) for b in row] for row in rows])


def _inline_button(button: Button) -> InlineKeyboardButton:
    if button.copy is not None:
        return InlineKeyboardButton(button.label, copy_text=CopyTextButton(button.copy))
    return InlineKeyboardButton(button.label, callback_data=button.data)


def _emojis(reactions) -> set[str]:
    return {reaction.emoji for reaction in reactions if isinstance(reaction, ReactionTypeEmoji)}


def _is_image_document(message: Message) -> bool:
    return bool(message.document and (message.document.mime_type or "").startswith("image/"))


def _without_command(caption: str | None) -> str | None:
    if caption and caption.startswith("/tags"):
        return caption.partition(" ")[2] or None
    return caption


async def _send(call: Callable[[], Awaitable[T]], idempotent: bool = False) -> T:
    """Make a Bot API call, retrying network failures and 5xx with backoff.

    429s are retried by PTB's rate limiter; requests the API refuses (BadRequest) are not. A
    timeout may mean the request went through, so only calls that can safely happen twice
    (`idempotent`: reads, setting a reaction) are retried after one; a message is not sent
    twice.
    """
    for attempt in range(SEND_RETRIES):
        try:
            return await call()
        except BadRequest:
            raise
        except TimedOut:
            if not idempotent:
                raise
            log.warning("Bot API call timed out; retrying")
        except NetworkError as error:
            log.warning("Bot API call failed (%s); retrying", error)
        await asyncio.sleep(0.5 * 2**attempt)
    return await call()
