"""The Telegram adapter: python-telegram-bot updates in, HashtagService calls, replies out.

It holds no hashtag logic. Per update it finds the photo(s), the person and the bot message
concerned, calls the core, and renders the result: plain copyable hashtags plus an inline
keyboard (a toggle per tag, and 👍 to save the ticked ones). The selection lives in the
keyboard itself, so no state is kept between button presses.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    PhotoSize,
    ReactionTypeEmoji,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    MessageReactionHandler,
    filters,
)

from bot.adapters import messages
from bot.adapters.messages import explained
from bot.core.service import (
    REACTION_VERDICTS,
    THUMBS_UP,
    HashtagService,
    NotYourSuggestion,
    UnknownSuggestion,
    UserRef,
    tracked,
)
from bot.operations import metrics
from inference.images import ImageRejected, check_file_size

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "telegram"
ALLOWED_UPDATES = ["message", "callback_query", "message_reaction"]
ALBUM_WAIT_SECONDS = 1.0  # an album arrives as separate updates, close together
NOTED = "👌"
SEND_RETRIES = 3


def build_application(
    service: HashtagService, token: str, api_url: str | None = None
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
    TelegramAdapter(service).register(application)
    return application


class TelegramAdapter:
    def __init__(self, service: HashtagService):
        self.service = service
        self.min_side = service.engine.model.spec.input_side
        self._albums: dict[tuple[int, str], list[Message]] = defaultdict(list)

    def register(self, app: Application) -> None:
        image = filters.PHOTO | filters.Document.IMAGE
        asks_for_tags = filters.CaptionRegex(r"^/tags(@\w+)?(\s|$)")
        private = filters.ChatType.PRIVATE
        app.add_handler(CommandHandler("start", self.start))
        app.add_handler(CommandHandler("help", self.help))
        app.add_handler(CommandHandler("tags", self.tags_command))
        app.add_handler(CommandHandler("forget", self.forget_command))
        app.add_handler(MessageHandler(image & (private | asks_for_tags), self.photo))
        app.add_handler(MessageHandler(filters.REPLY & filters.TEXT & ~filters.COMMAND, self.reply))
        app.add_handler(MessageHandler(filters.COMMAND, self.unknown_command))
        app.add_handler(MessageHandler(private, self.not_a_photo))
        app.add_handler(CallbackQueryHandler(self.button))
        app.add_handler(MessageReactionHandler(self.reaction))
        app.add_error_handler(self.on_error)

    # --- commands ------------------------------------------------------------------------

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _reply(update.effective_message, messages.START)

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _reply(update.effective_message, messages.HELP)

    async def unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _reply(update.effective_message, messages.UNKNOWN_COMMAND)

    async def not_a_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _reply(update.effective_message, messages.NOT_A_PHOTO)

    @tracked
    async def tags_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/tags as a reply to a photo suggests for it; alone, it lists the person's hashtags."""
        message = update.effective_message
        replied = message.reply_to_message
        if replied and (replied.photo or _is_image_document(replied)):
            await self._suggest(replied, [replied], replied.caption)
            return
        async with explained(lambda text: _reply(message, text)):
            counts = await self.service.top_hashtags(_user(update))
            await _reply(message, messages.top_hashtags(counts))

    async def forget_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        confirm = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("Delete everything", callback_data="forget|yes"),
                    InlineKeyboardButton("Keep it", callback_data="forget|no"),
                ]
            ]
        )
        await _reply(update.effective_message, messages.FORGET_CONFIRM, reply_markup=confirm)

    # --- photos --------------------------------------------------------------------------

    @tracked
    async def photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        photos = [message]
        if message.media_group_id:
            key = (message.chat_id, message.media_group_id)
            self._albums[key].append(message)
            if len(self._albums[key]) > 1:
                return  # the album's first photo answers for all of them
            await asyncio.sleep(ALBUM_WAIT_SECONDS)
            photos = self._albums.pop(key)
        caption = next((photo.caption for photo in photos if photo.caption), None)
        await self._suggest(message, photos, caption)

    async def _suggest(self, reply_to: Message, photos: list[Message], caption: str | None) -> None:
        author = UserRef(PLATFORM, str(photos[0].from_user.id))
        async with explained(lambda text: _reply(reply_to, text)):
            with metrics.STAGE_SECONDS.labels("download").time():
                images = [await self._download(photo) for photo in photos]
            suggestion = await self.service.suggest(author, images, _without_command(caption))
            keyboard = _keyboard(suggestion.id, [tag for tag, _ in suggestion.tags])
            with metrics.STAGE_SECONDS.labels("reply").time():
                sent = await _reply(reply_to, suggestion.text, reply_markup=keyboard)
            await self.service.attach_reply(suggestion.id, str(sent.chat_id), str(sent.message_id))

    async def _download(self, message: Message) -> bytes:
        """The image bytes, with the size checked before anything is downloaded."""
        if message.photo:
            chosen = smallest_photo_at_least(message.photo, self.min_side)
            file_id, file_size = chosen.file_id, chosen.file_size
        else:
            file_id, file_size = message.document.file_id, message.document.file_size
        if file_size is not None:
            check_file_size(file_size, self.service.engine.limits)
        try:
            telegram_file = await _send(lambda: message.get_bot().get_file(file_id))
            return bytes(await _send(telegram_file.download_as_bytearray))
        except BadRequest as error:  # e.g. "File is too big"
            raise ImageRejected(
                f"Telegram would not hand me that file ({error.message})."
            ) from None

    # --- feedback ------------------------------------------------------------------------

    @tracked
    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        action, _, argument = (query.data or "").partition("|")
        user = _user(update)
        if action == "forget":
            await query.answer()
            text = await messages.answer_forget(self.service, user, argument == "yes")
            await _send(lambda: query.edit_message_text(text))
            return
        suggestion_id, _, index = argument.partition("|")
        try:
            suggestion, _ = await self.service.owned_suggestion(user, int(suggestion_id))
        except (NotYourSuggestion, UnknownSuggestion) as error:
            await query.answer(messages.for_error(error))  # a short notice; nothing is written
            return
        markup = query.message.reply_markup
        if action == "toggle":
            await query.answer()
            await _send(lambda: query.edit_message_reply_markup(_toggled(markup, int(index))))
        elif action == "save":
            tags = _ticked_tags(markup) or suggestion.shown_tags
            saved = await self.service.accept(user, suggestion.id, tags, source="button")
            await query.answer(messages.saved(saved))
            # Shown only now that the write has committed.
            text = f"{query.message.text}\n{messages.saved(saved)}"
            await _send(lambda: query.edit_message_text(text))

    @tracked
    async def reaction(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """👍 saves every shown tag, 👎 rejects them, removing a reaction undoes it."""
        change = update.message_reaction
        if change.user is None:  # an anonymous admin or a channel: nobody to credit
            return
        chat_id, message_id = change.chat.id, change.message_id
        try:
            suggestion = await self.service.find_by_reply(PLATFORM, str(chat_id), str(message_id))
        except UnknownSuggestion:
            return  # a reaction to some other message
        user = UserRef(PLATFORM, str(change.user.id))
        old, new = _emojis(change.old_reaction), _emojis(change.new_reaction)

        async def notice(text: str) -> None:
            await _send(
                lambda: context.bot.send_message(chat_id, text, reply_to_message_id=message_id)
            )

        async with explained(notice):
            await self.service.react(user, suggestion.id, added=new - old, removed=old - new)
            # The bot's own 👌 on its reply says "stored"; it goes away with an undo.
            saved = bool(REACTION_VERDICTS.keys() & new)
            await _send(
                lambda: context.bot.set_message_reaction(
                    chat_id, message_id, NOTED if saved else None
                )
            )

    @tracked
    async def reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A reply to the bot's suggestion with the person's own #hashtags."""
        message = update.effective_message
        replied = message.reply_to_message
        if replied.from_user is None or replied.from_user.id != context.bot.id:
            if message.chat.type == ChatType.PRIVATE:
                await self.not_a_photo(update, context)
            return
        async with explained(lambda text: _reply(message, text)):
            suggestion = await self.service.find_by_reply(
                PLATFORM, str(message.chat_id), str(replied.message_id)
            )
            tags = await self.service.add_own_tags(_user(update), suggestion.id, message.text)
            await _reply(message, messages.saved(tags) if tags else messages.NO_HASHTAGS_IN_REPLY)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log the failure (the logging setup redacts tokens) and tell the person."""
        metrics.ERRORS.labels("unexpected").inc()
        log.error("update failed: %s", context.error, exc_info=context.error)
        if isinstance(update, Update) and update.effective_chat:
            try:
                await context.bot.send_message(
                    update.effective_chat.id, messages.SOMETHING_WENT_WRONG
                )
            except TelegramError:
                log.warning("could not tell the person about the failure")


def smallest_photo_at_least(sizes: tuple[PhotoSize, ...], min_side: int) -> PhotoSize:
    """The cheapest download that still covers the model's input; the largest otherwise."""
    ordered = sorted(sizes, key=lambda size: size.width * size.height)
    return next((size for size in ordered if min(size.width, size.height) >= min_side), ordered[-1])


def _keyboard(suggestion_id: int, tags: list[str]) -> InlineKeyboardMarkup:
    buttons = [
        InlineKeyboardButton(messages.tag_label(tag), callback_data=f"toggle|{suggestion_id}|{i}")
        for i, tag in enumerate(tags)
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    save = InlineKeyboardButton(f"{THUMBS_UP} Save ticked", callback_data=f"save|{suggestion_id}")
    return InlineKeyboardMarkup([*rows, [save]])


def _toggled(markup: InlineKeyboardMarkup, index: int) -> InlineKeyboardMarkup:
    """The same keyboard with one tag's tick flipped."""
    rows = []
    for row in markup.inline_keyboard:
        new_row = []
        for button in row:
            data = button.callback_data or ""
            if data.startswith("toggle|") and data.rsplit("|", 1)[1] == str(index):
                button = InlineKeyboardButton(messages.flip_label(button.text), callback_data=data)
            new_row.append(button)
        rows.append(new_row)
    return InlineKeyboardMarkup(rows)


def _ticked_tags(markup: InlineKeyboardMarkup | None) -> list[str]:
    if markup is None:
        return []
    labels = [
        button.text
        for row in markup.inline_keyboard
        for button in row
        if (button.callback_data or "").startswith("toggle|")
    ]
    return [tag for tag, ticked in map(messages.parse_tag_label, labels) if ticked]


def _emojis(reactions) -> set[str]:
    return {reaction.emoji for reaction in reactions if isinstance(reaction, ReactionTypeEmoji)}


def _is_image_document(message: Message) -> bool:
    return bool(message.document and (message.document.mime_type or "").startswith("image/"))


def _without_command(caption: str | None) -> str | None:
    if caption and caption.startswith("/tags"):
        return caption.partition(" ")[2] or None
    return caption


def _user(update: Update) -> UserRef:
    return UserRef(PLATFORM, str(update.effective_user.id))


async def _reply(message: Message, text: str, **options) -> Message:
    """Answer as a reply to `message` (quoted in private chats too, not only in groups)."""
    return await _send(lambda: message.reply_text(text, do_quote=True, **options))


async def _send(call: Callable[[], Awaitable[T]]) -> T:
    """Make a Bot API call, retrying network failures and 5xx with backoff.

    429s are retried by PTB's rate limiter; requests the API refuses (BadRequest) are not.
    """
    for attempt in range(SEND_RETRIES):
        try:
            return await call()
        except BadRequest:
            raise
        except NetworkError as error:
            log.warning("Bot API call failed (%s); retrying", error)
            await asyncio.sleep(0.5 * 2**attempt)
    return await call()
