"""`python -m bot --console`: the whole loop in a terminal, on the same core and database.

Type an image path to get hashtags, then answer the way a chat user would. Thin on purpose:
each line becomes one HashtagService call, like a Telegram or Discord update.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.core import messages
from bot.core.messages import explained
from bot.core.service import HashtagService, Suggestion, UserRef
from inference.cli import read_image_file

log = logging.getLogger(__name__)

PLATFORM = "console"
CONSOLE_HELP = (
    "Type the path of a photo to get hashtags. Then:\n"
    "  y            save all the hashtags shown      y 1 3   save only numbers 1 and 3\n"
    "  n            mark the hashtags shown as wrong  #mine #tags   add your own\n"
    "  top          your most-used hashtags           forget  delete everything about you\n"
    "  help         this text                         quit    leave (Ctrl-D works too)"
)

NO_PHOTO_YET = "Type the path of a photo first; then answer about its hashtags."
NOT_NUMBERS = "After y, give only the numbers shown before the hashtags, like: y 1 3"
NUL_IN_PATH = "A file path cannot contain a NUL character."

# Only ASCII digits: `str.isdigit` also accepts '²' (which `int` refuses) or '٣' (which it reads
# as 3); six digits at most, so `int` is never asked to read an enormous number.
_NUMBER = re.compile("[0-9]{1,6}")


async def run_console(
    service: HashtagService,
    read_line: Callable[[str], Awaitable[str]] | None = None,
    write: Callable[[str], None] = print,
) -> None:
    read_line = read_line or (lambda prompt: asyncio.to_thread(input, prompt))
    user = UserRef(PLATFORM, getpass.getuser())
    current = None  # the suggestion the next answer is about
    write(CONSOLE_HELP)
    while True:
        try:
            line = (await read_line("> ")).strip()
        except EOFError:
            return
        if line in ("quit", "exit"):
            return
        if not line:
            continue

        try:
            current = await _answer(service, user, line, current, write)
        except Exception:  # one bad line must not end the session: say so, keep reading
            log.exception("the console could not handle %r", line)
            write(messages.SOMETHING_WENT_WRONG)


async def _answer(
    service: HashtagService,
    user: UserRef,
    line: str,
    current: Suggestion | None,
    write: Callable[[str], None],
) -> Suggestion | None:
    """Handle one typed line; returns the suggestion the next answer is about.

    Errors a person can act on (an unreadable file, a database that cannot take the write)
    become their message, as on the chat platforms; others are raised for the loop to log.
    """

    async def say(text: str) -> None:
        write(text)

    async with explained(say):
        if line == "help":
            write(CONSOLE_HELP)
        elif line == "top":
            write(messages.top_hashtags(await service.top_hashtags(user)))
        elif line == "forget":
            done = await service.forget(user)
            write(messages.FORGOTTEN if done else messages.NOTHING_TO_FORGET)
            return None
        elif line.startswith("#") and current:
            write(messages.own_tags_saved(await service.add_own_tags(user, current.id, line)))
        elif (line == "y" or line.startswith("y ")) and current:
            words = line[1:].split()
            if all(_NUMBER.fullmatch(word) for word in words):
                picked = _numbered(words, current.tags)
                write(messages.saved(await service.accept(user, current.id, picked)))
            else:
                write(NOT_NUMBERS)
        elif line == "n" and current:
            write(messages.rejected(await service.reject(user, current.id, source="button")))
        elif line in ("y", "n") or line.startswith(("y ", "#")):
            write(NO_PHOTO_YET)
        elif "\0" in line:  # the OS cannot take it, and Path.stat() raises ValueError
            write(NUL_IN_PATH)
        else:
            image = read_image_file(Path(line).expanduser(), service.engine.limits)
            current = await service.suggest(user, [image])
            write(current.text)
            write("  ".join(f"{i}:{tag}" for i, (tag, _) in enumerate(current.tags, 1)))
    return current


def _numbered(words: list[str], tags: list[tuple[str, float]]) -> list[str] | None:
    """`["1", "3"]` -> those tags (numbers past the list are ignored); none -> None (all)."""
    if not words:
        return None
    return [tags[int(word) - 1][0] for word in words if 1 <= int(word) <= len(tags)]
