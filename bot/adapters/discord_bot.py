"""The Discord adapter: discord.py events in, Conversation calls, replies out.

Like the Telegram adapter it holds no conversation logic (bot/core/conversation.py does).
Buttons carry their state in their labels and are answered from `on_interaction` by custom id,
and reactions arrive as raw events, so a suggestion keeps working after a restart.

What needs the privileged `message_content` intent: reading images (and replies) in ordinary
server messages. Without it the bot still answers DMs, messages that mention it, the slash
commands and the "Suggest hashtags" message menu. `--discord-channels` turns the intent on
and limits plain-message reading to the channels an admin chose.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.app_commands import locale_str

from bot.core import messages
from bot.core.conversation import COMMANDS, Button, Command, Conversation, MessageRef, Photo
from bot.core.i18n import DEFAULT_LANGUAGE, supported, texts
from bot.core.messages import fit
from bot.core.service import HashtagService, UserRef
from bot.operations import metrics
from inference.images import FORMATS_FOR_PEOPLE, ImageRejected

log = logging.getLogger(__name__)

PLATFORM = "discord"
NOTED = "👌"
MESSAGE_LIMIT = 2000  # characters in one message
MAX_BUTTONS = 25  # five rows of five
LOCALES_REMEMBERED = 100_000  # people whose last interaction's language is kept in memory
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".avif",
)


def use_endpoints(api_url: str | None, gateway_url: str | None) -> None:
    """Point discord.py at a REST / gateway proxy (or the tests' fakes).

    discord.py has no option for this; these two class attributes are where it keeps them.
    """
    if api_url:
        discord.http.Route.BASE = api_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def build_client(
    service: HashtagService,
    *,
    guild_id: int | None = None,
    content_channels: Iterable[int] = (),
    sharded: bool = False,
    shards: Sequence[int] | None = None,
    shard_count: int | None = None,
    privacy_contact: str | None = None,
    **client_options,
) -> discord.Client:
    """`sharded`: all shards in this process, as many as Discord recommends; `shards` and
    `shard_count`: only these of that many, so several processes share a bot's shards."""
    content_channels = frozenset(content_channels)
    intents = discord.Intents.default()
    intents.message_content = bool(content_channels)  # privileged: only when asked for
    if shards is not None:
        client_options |= {"shard_ids": list(shards), "shard_count": shard_count}
    client_class = discord.AutoShardedClient if sharded or shards else discord.Client
    client = client_class(intents=intents, **client_options)
    conversation = Conversation(service, PLATFORM, privacy_contact=privacy_contact)
    DiscordAdapter(conversation, client, guild_id, content_channels)
    return client


class DiscordAdapter:
    def __init__(
        self,
        conversation: Conversation,
        client: discord.Client,
        guild_id: int | None,
        content_channels: frozenset[int],
    ):
        self.conversation, self.client = conversation, client
        self.guild = discord.Object(guild_id) if guild_id else None
        self.content_channels = content_channels
        self._locales: OrderedDict[int, str] = OrderedDict()  # user id -> last client locale
        self.tree = app_commands.CommandTree(client)
        self._register_commands()
        for handler in (
            self.setup_hook,
            self.on_message,
            self.on_interaction,
            self.on_raw_reaction_add,
            self.on_raw_reaction_remove,
            self.on_error,
        ):
            setattr(client, handler.__name__, handler)

    def _register_commands(self) -> None:
        """Every command, named and described in each language the bot speaks (Discord
        shows a person their client's language: `CatalogueTranslator`)."""

        @self.tree.command(
            name="tags", description=locale_str(messages.COMMAND_DESCRIPTIONS["tags"])
        )
        @app_commands.describe(image=locale_str(messages.IMAGE_ARGUMENT))
        async def tags(interaction: discord.Interaction, image: discord.Attachment | None = None):
            chat, sender = _InteractionChat(interaction), self._user(interaction)
            if image is None:
                await self.conversation.command(chat, sender, "tags")
                return
            await interaction.response.defer(thinking=True)
            photos = [self._photo(image)] if _is_image(image) else []
            await self.conversation.photo(chat, sender, photos)

        for command in COMMANDS:
            if command.on_discord and command.name != "tags":
                self.tree.add_command(self._slash_command(command))

        @self.tree.context_menu(name=locale_str(messages.SUGGEST_MENU))
        async def suggest_menu(interaction: discord.Interaction, message: discord.Message):
            await interaction.response.defer(thinking=True)
            await self.conversation.photo(
                _InteractionChat(interaction),
                self._user(interaction),
                [self._photo(image) for image in _images(message)],
                message.content,
                author=self._user(message.author),
            )

    def _slash_command(self, command: Command) -> app_commands.Command:
        """A slash command that hands its one optional text argument, if any, to the
        conversation, which checks it (so `/count abc` is answered as it is on Telegram)."""

        async def without_argument(interaction: discord.Interaction) -> None:
            await self.conversation.command(
                _InteractionChat(interaction), self._user(interaction), command.name
            )

        async def with_argument(interaction: discord.Interaction, value: str = "") -> None:
            await self.conversation.command(
                _InteractionChat(interaction), self._user(interaction), command.name, value
            )

        callback = without_argument
        if command.argument:
            callback = app_commands.describe(value=locale_str(command.argument))(with_argument)
        return app_commands.Command(
            name=command.name, description=locale_str(command.description), callback=callback
        )

    async def setup_hook(self) -> None:
        """Sync slash commands, in every language: to one guild (instant, for development)
        or globally."""
        await self.tree.set_translator(CatalogueTranslator())
        if self.guild:
            self.tree.copy_global_to(guild=self.guild)
        await self.tree.sync(guild=self.guild)

    async def on_error(self, event: str, *args, **kwargs) -> None:
        """What fails outside the conversation is logged and counted; the bot carries on."""
        metrics.ERRORS.labels("unexpected").inc()
        log.exception("Discord event %s failed", event)

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        private = message.guild is None
        addressed = private or self.client.user in message.mentions
        if not (addressed or message.channel.id in self.content_channels):
            return
        chat, sender, images = _MessageChat(message), self._user(message.author), _images(message)
        reference = message.reference
        if reference and reference.message_id and not images:
            replied = reference.resolved
            to_bot = isinstance(replied, discord.Message) and replied.author == self.client.user
            to = MessageRef(str(reference.channel_id), str(reference.message_id))
            await self.conversation.reply(chat, sender, to, to_bot, message.content)
        elif images:
            photos = [self._photo(image) for image in images]
            await self.conversation.photo(chat, sender, photos, message.content)
        else:
            await self.conversation.not_a_photo(chat, sender)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Buttons, answered by custom id: also those on messages sent before a restart."""
        if interaction.type != discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        await self.conversation.button(_Press(interaction), self._user(interaction), custom_id)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=False)

    async def _reaction(self, payload: discord.RawReactionActionEvent, added: bool) -> None:
        if payload.user_id == self.client.user.id:
            return
        emoji = {str(payload.emoji)}
        await self.conversation.reaction(
            _ReactedMessage(self.client, payload.channel_id, payload.message_id),
            self._user(payload.user_id),
            MessageRef(str(payload.channel_id), str(payload.message_id)),
            added=emoji if added else set(),
            removed=set() if added else emoji,
        )

    def _user(self, who: discord.Interaction | discord.abc.Snowflake | int) -> UserRef:
        """The person, with their client's language: an interaction carries it; messages and
        reactions do not, so they get the one the person's last interaction had."""
        if isinstance(who, discord.Interaction):
            locale = str(who.locale)
            self._locales[who.user.id] = locale
            self._locales.move_to_end(who.user.id)
            if len(self._locales) > LOCALES_REMEMBERED:
                self._locales.popitem(last=False)
            return self.conversation.user(who.user.id, locale)
        user_id = who if isinstance(who, int) else who.id
        return self.conversation.user(user_id, self._locales.get(user_id))

    def _photo(self, attachment: discord.Attachment) -> Photo:
        async def download() -> bytes:
            if not _is_image(attachment):
                raise ImageRejected(messages.NOT_A_PHOTO, formats=FORMATS_FOR_PEOPLE)
            return await attachment.read()

        return Photo(attachment.size, download)


class CatalogueTranslator(app_commands.Translator):
    """Command descriptions (and the message menu's name) from the bot's catalogues."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        language = supported(locale.value)
        if language is None or language == DEFAULT_LANGUAGE:
            return None
        translated = texts(language)._(string.message)
        return translated if translated != string.message else None  # None: Discord's default


class _MessageChat:
    """Answers go as replies to the person's message."""

    def __init__(self, message: discord.Message):
        self.message = message
        self.private = message.guild is None

    async def say(
        self, text: str, buttons: Sequence[Button] = (), public: bool = False
    ) -> MessageRef:
        sent = await self.message.reply(fit(text, MESSAGE_LIMIT), **_with_view(buttons))
        return MessageRef(str(sent.channel.id), str(sent.id))


class _InteractionChat:
    """Answers to a slash command or menu: its response, or follow-ups once deferred; only
    suggestions are for the whole channel."""

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction
        self.private = interaction.guild_id is None

    async def say(
        self, text: str, buttons: Sequence[Button] = (), public: bool = False
    ) -> MessageRef | None:
        options = {"ephemeral": not public, **_with_view(buttons)}
        text = fit(text, MESSAGE_LIMIT)
        if not self.interaction.response.is_done():
            await self.interaction.response.send_message(text, **options)
            return None
        sent = await self.interaction.followup.send(text, wait=True, **options)
        return MessageRef(str(sent.channel.id), str(sent.id))


class _Press:
    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction
        message = interaction.message
        self.text = message.content if message else ""
        self.buttons = _buttons(message) if message else []
        self.answered = False

    async def answer(
        self,
        notice: str | None = None,
        text: str | None = None,
        buttons: Sequence[Button] | None = None,
    ) -> None:
        self.answered = True
        response = self.interaction.response
        edit: dict[str, Any] = {}
        if text is not None:
            edit["content"] = fit(text, MESSAGE_LIMIT)
        if buttons is not None:
            edit["view"] = _view(buttons) if buttons else None
        if edit:
            await response.edit_message(**edit)
            if notice and text is None:  # the message does not say it: a word to the presser
                await self.interaction.followup.send(fit(notice, MESSAGE_LIMIT), ephemeral=True)
        elif notice:
            await response.send_message(notice, ephemeral=True)
        else:
            await response.defer()  # acknowledged: the message stays as it is


class _ReactedMessage:
    def __init__(self, client: discord.Client, channel_id: int, message_id: int):
        self.client = client
        channel = client.get_partial_messageable(channel_id)
        self.message = channel.get_partial_message(message_id)

    async def notice(self, text: str) -> None:
        await self.message.reply(fit(text, MESSAGE_LIMIT))

    async def set_noted(self, noted: bool) -> None:
        if noted:
            await self.message.add_reaction(NOTED)
        else:
            await self.message.remove_reaction(NOTED, self.client.user)


def _images(message: discord.Message) -> list[discord.Attachment]:
    return [attachment for attachment in message.attachments if _is_image(attachment)]


def _is_image(attachment: discord.Attachment) -> bool:
    if attachment.content_type:
        return attachment.content_type.startswith("image/") and "svg" not in attachment.content_type
    return attachment.filename.lower().endswith(IMAGE_EXTENSIONS)


def _with_view(buttons: Sequence[Button]) -> dict[str, discord.ui.View]:
    return {"view": _view(buttons)} if buttons else {}


def _view(buttons: Sequence[Button]) -> discord.ui.View:
    """Plain buttons whose presses on_interaction answers by custom id.

    The view is stopped before it is sent, so discord.py does not keep it in memory for
    ever: nothing depends on it after it is rendered.
    """
    view = discord.ui.View(timeout=None)
    for button in _fitting(buttons):
        primary = button.data.startswith(("save|", "forget|yes"))
        style = discord.ButtonStyle.primary if primary else discord.ButtonStyle.secondary
        view.add_item(discord.ui.Button(label=button.label, custom_id=button.data, style=style))
    view.stop()
    return view


def _fitting(buttons: Sequence[Button]) -> list[Button]:
    """What a Discord message can carry: no copy buttons (its text copies as it is), and at
    most 25 buttons, the hashtag toggles cut first (30 hashtags leave the last 7 without
    one; 👍 on the message still saves them all)."""
    usable = [button for button in buttons if button.copy is None]
    others = [button for button in usable if not button.data.startswith("toggle|")]
    toggles = [button for button in usable if button.data.startswith("toggle|")]
    return toggles[: MAX_BUTTONS - len(others)] + others


def _buttons(message: discord.Message) -> list[Button]:
    """Every button on a message, in order."""
    return [
        Button(child.label or "", child.custom_id or "")
        for row in message.components
        for child in getattr(row, "children", [])
        if isinstance(child, discord.components.Button)
    ]
