"""The Discord adapter: discord.py events in, HashtagService calls, replies out.

Like the Telegram adapter it holds no hashtag logic. Buttons carry their state in their
labels and are answered from `on_interaction` by custom id, and reactions arrive as raw events,
so a suggestion keeps working after a restart.

What needs the privileged `message_content` intent: reading images (and replies) in ordinary
server messages. Without it the bot still answers DMs, messages that mention it, the `/tags`
slash command and the "Suggest hashtags" message menu. `--discord-channels` turns the intent on
and limits plain-message reading to the channels an admin chose.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import discord
import yarl
from discord import app_commands

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

PLATFORM = "discord"
NOTED = "👌"
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
    DiscordAdapter(service, client, guild_id, content_channels)
    return client


class DiscordAdapter:
    def __init__(
        self,
        service: HashtagService,
        client: discord.Client,
        guild_id: int | None,
        content_channels: frozenset[int],
    ):
        self.service, self.client = service, client
        self.guild = discord.Object(guild_id) if guild_id else None
        self.content_channels = content_channels
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
        @self.tree.command(
            name="tags", description="Hashtags for an image, or your own top hashtags"
        )
        @app_commands.describe(image="The image to suggest hashtags for")
        async def tags(interaction: discord.Interaction, image: discord.Attachment | None = None):
            if image is None:
                counts = await self.service.top_hashtags(_user(interaction.user))
                await interaction.response.send_message(
                    messages.top_hashtags(counts), ephemeral=True
                )
                return
            await interaction.response.defer(thinking=True)
            await self._suggest_for_interaction(interaction, interaction.user, [image], None)

        @self.tree.command(name="forget", description="Delete everything the bot stored about you")
        async def forget(interaction: discord.Interaction):
            view = _view([("Delete everything", "forget|yes"), ("Keep it", "forget|no")])
            await interaction.response.send_message(
                messages.FORGET_CONFIRM, view=view, ephemeral=True
            )

        @self.tree.context_menu(name="Suggest hashtags")
        async def suggest_menu(interaction: discord.Interaction, message: discord.Message):
            images = _images(message)
            if not images:
                await interaction.response.send_message(messages.NOT_A_PHOTO, ephemeral=True)
                return
            await interaction.response.defer(thinking=True)
            await self._suggest_for_interaction(
                interaction, message.author, images, message.content
            )

    async def setup_hook(self) -> None:
        """Sync slash commands: to one guild (instant, for development) or globally."""
        if self.guild:
            self.tree.copy_global_to(guild=self.guild)
        await self.tree.sync(guild=self.guild)

    async def on_error(self, event: str, *args, **kwargs) -> None:
        """One failing event is logged and counted; the bot carries on."""
        metrics.ERRORS.labels("unexpected").inc()
        log.exception("Discord event %s failed", event)

    # --- messages ------------------------------------------------------------------------

    @tracked
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        private = message.guild is None
        addressed = private or self.client.user in message.mentions
        readable = addressed or message.channel.id in self.content_channels
        if not readable:
            return
        if message.reference and message.reference.message_id and not _images(message):
            await self._own_tags(message)
        elif images := _images(message):
            await self._suggest_for_message(message, images)
        elif private:
            await message.reply(messages.NOT_A_PHOTO)

    async def _suggest_for_message(
        self, message: discord.Message, images: list[discord.Attachment]
    ):
        async with explained(message.reply):
            with metrics.STAGE_SECONDS.labels("download").time():
                data = [await self._read(image) for image in images]
            suggestion = await self.service.suggest(_user(message.author), data, message.content)
            with metrics.STAGE_SECONDS.labels("reply").time():
                sent = await message.reply(suggestion.text, view=_tag_view(suggestion))
            await self.service.attach_reply(suggestion.id, str(sent.channel.id), str(sent.id))

    @tracked
    async def _suggest_for_interaction(self, interaction, author, images, caption) -> None:
        async def say(text: str) -> None:
            await interaction.followup.send(text, ephemeral=True)

        async with explained(say):
            data = [await self._read(image) for image in images]
            suggestion = await self.service.suggest(_user(author), data, caption)
            sent = await interaction.followup.send(
                suggestion.text, view=_tag_view(suggestion), wait=True
            )
            await self.service.attach_reply(suggestion.id, str(sent.channel.id), str(sent.id))

    async def _read(self, attachment: discord.Attachment) -> bytes:
        """The attachment's bytes, its size and type checked before anything is downloaded."""
        check_file_size(attachment.size, self.service.engine.limits)
        if not _is_image(attachment):
            raise ImageRejected(messages.NOT_A_PHOTO)
        return await attachment.read()

    async def _own_tags(self, message: discord.Message) -> None:
        async with explained(message.reply):
            suggestion = await self.service.find_by_reply(
                PLATFORM, str(message.channel.id), str(message.reference.message_id)
            )
            tags = await self.service.add_own_tags(
                _user(message.author), suggestion.id, message.content
            )
            await message.reply(messages.saved(tags) if tags else messages.NO_HASHTAGS_IN_REPLY)

    # --- buttons -------------------------------------------------------------------------

    @tracked
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Buttons, answered by custom id: also those on messages sent before a restart."""
        if interaction.type != discord.InteractionType.component:
            return
        action, _, argument = str(interaction.data.get("custom_id", "")).partition("|")
        user = _user(interaction.user)
        if action == "forget":
            text = await messages.answer_forget(self.service, user, argument == "yes")
            await interaction.response.edit_message(content=text, view=None)
            return
        if action not in ("toggle", "save"):
            return
        suggestion_id, _, index = argument.partition("|")
        try:
            suggestion, _ = await self.service.owned_suggestion(user, int(suggestion_id))
        except (NotYourSuggestion, UnknownSuggestion) as error:
            await interaction.response.send_message(messages.for_error(error), ephemeral=True)
            return
        buttons = _buttons(interaction.message)
        if action == "toggle":
            flipped = [
                (
                    messages.flip_label(label)
                    if custom_id == f"toggle|{suggestion_id}|{index}"
                    else label,
                    custom_id,
                )
                for label, custom_id in buttons
            ]
            await interaction.response.edit_message(view=_view(flipped))
            return
        labels = [label for label, custom_id in buttons if custom_id.startswith("toggle|")]
        ticked = [tag for tag, on in map(messages.parse_tag_label, labels) if on]
        saved = await self.service.accept(user, suggestion.id, ticked or None, source="button")
        text = f"{interaction.message.content}\n{messages.saved(saved)}"
        await interaction.response.edit_message(content=text, view=None)

    # --- reactions -----------------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=False)

    @tracked
    async def _reaction(self, payload: discord.RawReactionActionEvent, added: bool) -> None:
        """👍 saves every shown tag, 👎 rejects them, removing the reaction undoes it.

        Someone else's reaction on a person's suggestion is ignored: it writes nothing.
        """
        emoji = str(payload.emoji)
        if payload.user_id == self.client.user.id or emoji not in REACTION_VERDICTS:
            return
        user = UserRef(PLATFORM, str(payload.user_id))
        try:
            suggestion = await self.service.find_by_reply(
                PLATFORM, str(payload.channel_id), str(payload.message_id)
            )
            changed = {"added": [emoji]} if added else {"removed": [emoji]}
            await self.service.react(user, suggestion.id, **changed)
        except (NotYourSuggestion, UnknownSuggestion):
            return
        if not added:
            return
        # Acknowledged only after the write committed.
        channel = self.client.get_partial_messageable(payload.channel_id)
        await channel.get_partial_message(payload.message_id).add_reaction(NOTED)


def _images(message: discord.Message) -> list[discord.Attachment]:
    return [attachment for attachment in message.attachments if _is_image(attachment)]


def _is_image(attachment: discord.Attachment) -> bool:
    if attachment.content_type:
        return attachment.content_type.startswith("image/") and "svg" not in attachment.content_type
    return attachment.filename.lower().endswith(IMAGE_EXTENSIONS)


def _user(author: discord.abc.User) -> UserRef:
    return UserRef(PLATFORM, str(author.id))


def _tag_view(suggestion) -> discord.ui.View:
    buttons = [
        (messages.tag_label(tag), f"toggle|{suggestion.id}|{i}")
        for i, (tag, _) in enumerate(suggestion.tags)
    ]
    return _view([*buttons, (f"{THUMBS_UP} Save ticked", f"save|{suggestion.id}")])


def _view(buttons: list[tuple[str, str]]) -> discord.ui.View:
    """Plain buttons whose presses on_interaction answers by custom id.

    The view is stopped before it is sent, so discord.py does not keep it in memory for
    ever: nothing depends on it after it is rendered.
    """
    view = discord.ui.View(timeout=None)
    for label, custom_id in buttons:
        primary = custom_id.startswith(("save|", "forget|yes"))
        style = discord.ButtonStyle.primary if primary else discord.ButtonStyle.secondary
        view.add_item(discord.ui.Button(label=label, custom_id=custom_id, style=style))
    view.stop()
    return view


def _buttons(message: discord.Message) -> list[tuple[str, str]]:
    """(label, custom_id) of every button on a message, in order."""
    return [
        (child.label or "", child.custom_id or "")
        for row in message.components
        for child in getattr(row, "children", [])
        if isinstance(child, discord.components.Button)
    ]
