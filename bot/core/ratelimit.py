"""Per-user rate limits: a token bucket per person, so one busy user cannot starve the rest."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    per_minute: float = 20.0  # sustained photos per minute
    burst: int = 8  # photos that may arrive at once (an album)


class RateLimiter:
    """Remembers the most recent `max_users` people; anyone forgotten starts with a full bucket."""

    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 100_000,
    ):
        self.limit, self.clock, self.max_users = limit, clock, max_users
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def acquire(self, key: Hashable) -> float:
        """Take one token: 0.0 when allowed, else the seconds until the next one is free."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.limit.burst), now))
        tokens = min(self.limit.burst, tokens + (now - last) * self.limit.per_minute / 60)
        if tokens >= 1:
            self._remember(key, (tokens - 1, now))
            return 0.0
        self._remember(key, (tokens, now))
        return (1 - tokens) * 60 / self.limit.per_minute

    def _remember(self, key: Hashable, bucket: tuple[float, float]) -> None:
        self._buckets[key] = bucket
        if len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
