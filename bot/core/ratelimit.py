"""Per-user rate limits: a token bucket per person, so one busy user cannot starve the rest."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    per_minute: float = 20.0  # sustained photos per minute
    burst: int = 10  # photos that may arrive at once: a whole album (Telegram's at most 10)


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

    def acquire(self, key: Hashable, count: int = 1) -> float:
        """Take `count` tokens, all or none: 0.0 when allowed, else the seconds until that
        many are free. An album is one request for all its photos, so it is never half
        answered; one larger than the burst waits for a full bucket."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.limit.burst), now))
        tokens = min(self.limit.burst, tokens + (now - last) * self.limit.per_minute / 60)
        needed = min(count, self.limit.burst)
        if tokens >= needed:
            self._remember(key, (tokens - needed, now))
            return 0.0
        self._remember(key, (tokens, now))
        return (needed - tokens) * 60 / self.limit.per_minute

    def _remember(self, key: Hashable, bucket: tuple[float, float]) -> None:
        self._buckets[key] = bucket
        if len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
