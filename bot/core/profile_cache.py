"""The people whose profiles stay in memory between their photos, within a byte budget.

A profile's size grows with its history (about 4 KB a photo with 512-d embeddings: 37 MB at
10,000 photos), so a cache bounded by count is not bounded at all: 2,048 busy people would
hold tens of gigabytes. This one counts bytes (`UserProfile.nbytes`) and lets the least
recently used go first; a profile larger than the whole budget is used once and not kept.
"""

from __future__ import annotations

from collections import OrderedDict

from bot.core.personalize import UserProfile

DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024


class ProfileCache:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[int, tuple[UserProfile, int]] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: int) -> tuple[UserProfile, int] | None:
        """The profile and the history version it reflects, now the most recently used."""
        entry = self._entries.get(user_id)
        if entry is not None:
            self._entries.move_to_end(user_id)
        return entry

    def put(self, user_id: int, profile: UserProfile, version: int) -> None:
        """Keep (or re-measure, after the profile changed in place) one person's profile."""
        self.pop(user_id)
        size = profile.nbytes
        if size > self.budget_bytes:
            return
        self._entries[user_id] = (profile, version)
        self._sizes[user_id] = size
        self.nbytes += size
        while self.nbytes > self.budget_bytes:
            oldest, _ = self._entries.popitem(last=False)
            self.nbytes -= self._sizes.pop(oldest)

    def pop(self, user_id: int) -> None:
        if self._entries.pop(user_id, None) is not None:
            self.nbytes -= self._sizes.pop(user_id)
