"""The environment of the helper processes a start runs (the first start's export, the engine
measurement): this process's, without the bots' tokens, logging at this process's level."""

from __future__ import annotations

import logging
import os


def child_environment() -> dict[str, str]:
    """No child needs a secret: the tokens stay out of it (and out of anything it prints)."""
    environment = {name: value for name, value in os.environ.items() if not name.endswith("_TOKEN")}
    environment["LOG_LEVEL"] = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return environment
