"""`python -m bot --console`: the whole loop in a terminal, on the same core and database.

Type an image path to get hashtags, then answer the way a chat user would. Thin on purpose:
each line becomes one HashtagService call, like a Telegram or Discord update.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.core import messages
from bot.core.messages import explained
from bot.core.service import HashtagService, UserRef
from inference.cli import read_image_file

PLATFORM = "console"
CONSOLE_HELP = (
    "Type the path of a photo to get hashtags. Then:\n"
    "  y            save all the hashtags shown      y 1 3   save only numbers 1 and 3\n"
    "  n            mark the hashtags shown as wrong  #mine #tags   add your own\n"
    "  top          your most-used hashtags           forget  delete everything about you\n"
    "  help         this text                         quit    leave (Ctrl-D works too)"
)

NO_PHOTO_YET = "Type the path of a photo first; then answer about its hashtags."


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
                current = None
            elif line.startswith("#") and current:
                write(messages.own_tags_saved(await service.add_own_tags(user, current.id, line)))
            elif (line == "y" or line.startswith("y ")) and current:
                picked = _numbered(line[1:], current.tags)
                write(messages.saved(await service.accept(user, current.id, picked)))
            elif line == "n" and current:
                write(messages.rejected(await service.reject(user, current.id, source="button")))
            elif line in ("y", "n") or line.startswith(("y ", "#")):
                write(NO_PHOTO_YET)
            else:
                image = read_image_file(Path(line).expanduser(), service.engine.limits)
                current = await service.suggest(user, [image])
                write(current.text)
                write("  ".join(f"{i}:{tag}" for i, (tag, _) in enumerate(current.tags, 1)))


def _numbered(text: str, tags: list[tuple[str, float]]) -> list[str] | None:
    """`1 3` -> those tags; nothing -> None (all of them)."""
    numbers = [int(word) for word in text.split() if word.isdigit()]
    if not numbers:
        return None
    return [tags[n - 1][0] for n in numbers if 1 <= n <= len(tags)]
