"""Waiting for something the bot does, in a way that fails the test when it never happens."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], Awaitable[object] | object], what: str, timeout: float = 10.0
) -> None:
    """Poll `condition` (plain or async) until it is true; an AssertionError naming `what`
    after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _value(condition()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


async def _value(result: Awaitable[object] | object) -> object:
    return await result if inspect.isawaitable(result) else result
