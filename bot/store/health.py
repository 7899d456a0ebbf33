"""What the store last learned about its database, so /healthz can answer at once.

/healthz used to probe with a write transaction of its own, queued behind every write waiting
for the database: behind a burst of answers it took 32 s, and the Docker health check gives up
after 4. Now each transaction reports how it ended, and /healthz reads that. A damaged
database stays reported until the process restarts: a later write that happens not to touch
the damaged pages proves nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

STALLED_AFTER_SECONDS = 30.0  # writes waiting, none finished: the database has stopped


class StoreHealth:
    def __init__(self) -> None:
        self.problem: str | None = None  # why the last write (or read) failed, until one works
        self.damaged: str | None = None  # the database file is damaged: for good
        self.last_finished = time.monotonic()
        self.waiting = 0  # transactions queued or running right now
        self.waiting_since = 0.0  # when the oldest of them began waiting (monotonic)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Around one write transaction, from waiting for the database to its commit."""
        if not self.waiting:
            self.waiting_since = time.monotonic()
        self.waiting += 1
        try:
            yield
            self.wrote()
        finally:
            self.waiting -= 1

    def wrote(self) -> None:
        self.problem = None
        self.last_finished = time.monotonic()

    def failed(self, problem: str, damaged: bool = False) -> None:
        self.problem = problem
        if damaged:
            self.damaged = problem
        self.last_finished = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since a transaction last ended, or 0 while one is under way."""
        return 0.0 if self.waiting else time.monotonic() - self.last_finished

    @property
    def status(self) -> str:
        """ "writable", or what is wrong, in words for the operator."""
        if self.damaged:
            return self.damaged
        stalled = time.monotonic() - max(self.last_finished, self.waiting_since)
        if self.waiting and stalled > STALLED_AFTER_SECONDS:
            return f"not responding: no write finished in {stalled:.0f} s ({self.waiting} waiting)"
        return self.problem or "writable"
