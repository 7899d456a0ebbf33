"""The stored answers as a training set: who counts, what is shared, which part judges.

Everything here is decided afresh from the database at each re-fit, and from nothing else, so
a person who used /forget is in none of it, and a round gives exactly what it would have given
had they never existed.

- **The split** is a fixed property of each photo (a seeded hash of its stored embedding):
  about `holdout` of every person's answers judge the re-fit (the gate), as many again choose
  how far it moves (validation), the rest train. The gate is spread across people and across
  time; a photo that judged one round never trained an earlier one; the same photo posted twice
  never lands on both sides; and no row id decides anything, so a database in which somebody
  never existed splits everyone else's answers the same way.
- **No one person outweighs the crowd**: a person's answers weigh at most as much as
  `person_cap` photos together, in training and in the gate alike.
- **What one person wrote reaches others only when enough people wrote it**: a hashtag's row
  learns from answers only once at least `min_people` established people accepted it in the
  training part, and a hashtag outside the vocabulary becomes a community hashtag on the same
  rule. A person is established once they answered on `min_days` different days (UTC), so a
  handful of accounts made this afternoon cannot push a hashtag to everyone. The operator's
  block list is never shared.
"""

from __future__ import annotations

import datetime
import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from bot.store.records import AnsweredPhoto

# Label codes of one (photo, hashtag) cell.
UNLABELLED, SHOWN, REJECTED, ACCEPTED = 0, 1, 2, 3
TRAIN, VALIDATION, GATE = 0, 1, 2


@dataclass
class AnswerSet:
    """The answers as (photos, candidate hashtags) label codes, with embeddings and weights."""

    embeddings: np.ndarray  # (photos, dim) float32
    codes: np.ndarray  # (photos, tags) uint8, UNLABELLED..ACCEPTED
    weights: np.ndarray  # (photos,) float32: each person's share, see person_weights
    people: np.ndarray  # (photos,) int: whose answer

    def part(self, rows: np.ndarray) -> AnswerSet:
        return AnswerSet(
            self.embeddings[rows], self.codes[rows], self.weights[rows], self.people[rows]
        )

    @property
    def truth(self) -> np.ndarray:
        return (self.codes == ACCEPTED).astype(np.float32)

    def __len__(self) -> int:
        return len(self.codes)


def split_of(photos: list[AnsweredPhoto], holdout: float, seed: int) -> np.ndarray:
    """TRAIN, VALIDATION or GATE per photo, a fixed function of its embedding and `seed`."""
    draws = np.array([_unit_hash(photo.embedding, seed) for photo in photos])
    return np.where(draws < holdout, GATE, np.where(draws < 2 * holdout, VALIDATION, TRAIN))


def in_content_order(photos: list[AnsweredPhoto]) -> list[AnsweredPhoto]:
    """The photos in an order fixed by what they hold, not by when they were written: people
    answering at the same moment interleave their rows differently on every run, and the
    fit's minibatches must not depend on that."""

    def key(photo: AnsweredPhoto) -> tuple:
        return (_unit_hash(photo.embedding, 0), sorted(photo.verdicts.items()), photo.shown)

    return sorted(photos, key=key)


def _unit_hash(embedding: np.ndarray, seed: int) -> float:
    """A number in [0, 1) that looks random but depends only on its inputs, never on Python's
    per-process hashing."""
    digest = hashlib.blake2b(np.ascontiguousarray(embedding, np.float32).tobytes(), digest_size=8)
    digest.update(seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little") / float(1 << 64)


def person_weights(photos: list[AnsweredPhoto], person_cap: float) -> np.ndarray:
    """Per photo, 1, or less for a person with more than `person_cap` answered photos, so that
    together their answers weigh `person_cap` photos."""
    counts: dict[int, int] = defaultdict(int)
    for photo in photos:
        counts[photo.user_id] += 1
    return np.array(
        [min(1.0, person_cap / counts[photo.user_id]) for photo in photos], dtype=np.float32
    )


def established_people(photos: list[AnsweredPhoto], min_days: int) -> set[int]:
    """People who answered on at least `min_days` different days (UTC)."""
    days: dict[int, set[datetime.date]] = defaultdict(set)
    for photo in photos:
        day = datetime.datetime.fromtimestamp(photo.created_at, datetime.UTC).date()
        days[photo.user_id].add(day)
    return {person for person, seen in days.items() if len(seen) >= min_days}


def people_per_hashtag(photos: list[AnsweredPhoto], counted: set[int]) -> dict[str, set[int]]:
    """For each accepted hashtag, the `counted` people who accepted it."""
    people: dict[str, set[int]] = defaultdict(set)
    for photo in photos:
        if photo.user_id in counted:
            for tag, verdict in photo.verdicts.items():
                if verdict > 0:
                    people[tag].add(photo.user_id)
    return people


def community_hashtags(
    people: dict[str, set[int]],
    vocabulary: list[str],
    min_people: int,
    blocked: frozenset[str] = frozenset(),
) -> list[str]:
    """Hashtags outside the vocabulary that at least `min_people` counted people accepted,
    never a blocked one; most used first (ties by name, so the order never depends on hashing)."""
    known = set(vocabulary)
    shared = [
        tag
        for tag, users in people.items()
        if tag not in known and tag not in blocked and len(users) >= min_people
    ]
    return sorted(shared, key=lambda tag: (-len(people[tag]), tag))


def label_codes(photos: list[AnsweredPhoto], candidates: list[str]) -> np.ndarray:
    column = {tag: i for i, tag in enumerate(candidates)}
    codes = np.zeros((len(photos), len(candidates)), dtype=np.uint8)
    for row, photo in enumerate(photos):
        for tag in photo.shown:
            if tag in column:
                codes[row, column[tag]] = SHOWN
        for tag, verdict in photo.verdicts.items():
            if tag in column:  # private hashtags (too few people) never reach the shared head
                codes[row, column[tag]] = ACCEPTED if verdict > 0 else REJECTED
    return codes


def answer_set(photos: list[AnsweredPhoto], candidates: list[str], person_cap: float) -> AnswerSet:
    return AnswerSet(
        np.stack([photo.embedding for photo in photos]).astype(np.float32),
        label_codes(photos, candidates),
        person_weights(photos, person_cap),
        np.array([photo.user_id for photo in photos]),
    )
