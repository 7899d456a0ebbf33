"""`python -m bot --console`: the whole loop in a terminal, on the same core and database.

Type an image path to get hashtags, then answer the way a chat user would. Thin on purpose:
each line becomes one HashtagService call, like a Telegram or Discord update, and the chat
apps' /commands go to the same conversation layer they use (bot/core/conversation.py). It
speaks the terminal's language ($LC_ALL, $LC_MESSAGES, $LANG), or the one chosen with
/language.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bot.core import messages
from bot.core.conversation import Button, Conversation, MessageRef
from bot.core.i18n import ENGLISH, Texts
from bot.core.messages import N_, explained
from bot.core.service import HashtagService, Suggestion, UserRef
from inference.cli import read_image_file

log = logging.getLogger(__name__)

PLATFORM = "console"
CONSOLE_HELP = N_(
    "Type the path of a photo to get hashtags. Then:\n"
    "  y            save all the hashtags shown      y 1 3   save only numbers 1 and 3\n"
    "  n            mark the hashtags shown as wrong  #mine #tags   add your own\n"
    "  top, /tags   your most-used hashtags           forget  delete everything about you\n"
    "  /count 8     how many hashtags you get         /hide #tag, /unhide #tag, /hidden\n"
    "  /language es, /settings, /privacy              help    this text\n"
    "  quit         leave (Ctrl-D works too)"
)

NO_PHOTO_YET = N_("Type the path of a photo first; then answer about its hashtags.")
NOT_NUMBERS = N_("After y, give only the numbers shown before the hashtags, like: y 1 3")
NUL_IN_PATH = N_("A file path cannot contain a NUL character.")
# The chat apps' words that mean the console's own ones.
SAME_AS = {"/help": "help", "/start": "help", "/tags": "top", "/forget": "forget"}

# Only ASCII digits: `str.isdigit` also accepts '²' (which `int` refuses) or '٣' (which it reads
# as 3); six digits at most, so `int` is never asked to read an enormous number.
_NUMBER = re.compile("[0-9]{1,6}")


class _ConsoleChat:
    """The conversation layer's answers, printed; a button becomes the line to type instead."""

    private = True

    def __init__(self, write: Callable[[str], None]):
        self.write = write

    async def say(
        self, text: str, buttons: Sequence[Button] = (), public: bool = False
    ) -> MessageRef | None:
        typed = [line for line in map(_typed_instead, buttons) if line]
        self.write(f"{text}\n  {'   '.join(typed)}" if typed else text)
        return None


def _typed_instead(button: Button) -> str | None:
    """What to type in the terminal for a chat app's button (None: nothing to type)."""
    action, *fields = button.data.split("|")
    if action == "count":
        return f"/count {fields[0]}"
    if action == "language":
        return f"/language {fields[0]}"
    if action == "forget" and fields[0] == "yes":
        return "forget"
    return None


def terminal_language() -> str | None:
    """The terminal's language, as the C library would pick it ("es_ES.UTF-8" -> es)."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := os.environ.get(variable):
            return value.split(".")[0]
    return None


async def run_console(
    service: HashtagService,
    read_line: Callable[[str], Awaitable[str]] | None = None,
    write: Callable[[str], None] = print,
    privacy_contact: str | None = None,
) -> None:
    read_line = read_line or (lambda prompt: asyncio.to_thread(input, prompt))
    conversation = Conversation(service, PLATFORM, privacy_contact=privacy_contact)
    user = conversation.user(getpass.getuser(), terminal_language())
    current = None  # the suggestion the next answer is about
    write((await conversation.texts_for(user))._(CONSOLE_HELP))
    while True:
        try:
            line = (await read_line("> ")).strip()
        except EOFError:
            return
        if line in ("quit", "exit"):
            return
        if not line:
            continue
        word, _, argument = line.partition(" ")
        if word in SAME_AS and not argument:
            line = SAME_AS[word]
        elif _is_command(word, line):  # the chat apps' other commands
            await conversation.command(_ConsoleChat(write), user, word[1:], argument)
            continue

        t = ENGLISH
        try:
            t = await conversation.texts_for(user)
            current = await _answer(service, user, line, current, write, t)
        except Exception:  # one bad line must not end the session: say so, keep reading
            log.exception("the console could not handle %r", line)
            write(t._(messages.SOMETHING_WENT_WRONG))


async def _answer(
    service: HashtagService,
    user: UserRef,
    line: str,
    current: Suggestion | None,
    write: Callable[[str], None],
    t: Texts,
) -> Suggestion | None:
    """Handle one typed line; returns the suggestion the next answer is about.

    Errors a person can act on (an unreadable file, a database that cannot take the write)
    become their message, as on the chat platforms; others are raised for the loop to log.
    """

    async def say(text: str) -> None:
        write(text)

    async with explained(t, say):
        if line == "help":
            write(t._(CONSOLE_HELP))
        elif line == "top":
            write(messages.top_hashtags(t, await service.top_hashtags(user)))
        elif line == "forget":
            done = await service.forget(user)
            write(t._(messages.FORGOTTEN if done else messages.NOTHING_TO_FORGET))
            return None
        elif line.startswith("#") and current:
            write(messages.own_tags_saved(t, await service.add_own_tags(user, current.id, line)))
        elif (line == "y" or line.startswith("y ")) and current:
            words = line[1:].split()
            if all(_NUMBER.fullmatch(word) for word in words):
                picked = _numbered(words, current.tags)
                write(messages.saved(t, await service.accept(user, current.id, picked)))
            else:
                write(t._(NOT_NUMBERS))
        elif line == "n" and current:
            write(messages.rejected(t, await service.reject(user, current.id, source="button")))
        elif line in ("y", "n") or line.startswith(("y ", "#")):
            write(t._(NO_PHOTO_YET))
        elif "\0" in line:  # the OS cannot take it, and Path.stat() raises ValueError
            write(t._(NUL_IN_PATH))
        else:
            image = read_image_file(Path(line).expanduser(), service.engine.limits)
            current = await service.suggest(user, [image])
            write(current.text)
            write("  ".join(f"{i}:{tag}" for i, (tag, _) in enumerate(current.tags, 1)))
    return current


def _is_command(word: str, line: str) -> bool:
    """`/count 8` or `/whatever`, not the path of a photo such as `/home/me/cat.jpg`."""
    return word.startswith("/") and word[1:].isalpha() and not Path(line).exists()


def _numbered(words: list[str], tags: list[tuple[str, float]]) -> list[str] | None:
    """`["1", "3"]` -> those tags (numbers past the list are ignored); none -> None (all)."""
    if not words:
        return None
    return [tags[int(word) - 1][0] for word in words if 1 <= int(word) <= len(tags)]
