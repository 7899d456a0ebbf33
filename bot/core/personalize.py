"""Re-ranking the model's hashtags with what one person has accepted and rejected before.

Everything is added in log-odds, on top of the model's logit for each tag:

    logit(model score)
    + prior     · log( p_user(t) / p_global(t) )       the person's own tag habits (Bayes)
    + memory    · share of their similar photos that got t   "photos like this one"
    - rejection · log(1 + times they rejected t)
    + caption   · [t is written in the photo's caption]
    + trending  · log( p_recent(t) / p_global(t) )      optional, everyone's recent tags

p_user(t) is the (time-decayed) share of the person's photos that got t, smoothed towards
p_global(t) with the weight of `prior_strength` photos: with no history it *is* p_global, so the
prior term is exactly 0. The memory term is how the person's own out-of-vocabulary hashtags come
back: they have no model score, only history. A brand-new person gets the model's ranking
unchanged. The default weights were chosen with benchmarks/personalization.py (see
benchmarks/README.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bot.core.trust import everyones_rate, trust_multiplier
from bot.store import UserHistory
from bot.store.records import ShownEntry

SECONDS_PER_DAY = 86_400.0
# Without any global feedback, assume about this many tags per photo, spread evenly.
TYPICAL_TAGS_PER_PHOTO = 5.0
# Photos' worth of evidence the smoothed priors start from.
GLOBAL_SMOOTHING, TRENDING_SMOOTHING = 10.0, 10.0
# The memory vote is a share of similar photos, smoothed by this many photos' worth of "no":
# one near-identical photo with a tag votes 0.8 for it, several similar photos average out.
MEMORY_SMOOTHING = 0.25


@dataclass(frozen=True)
class Weights:
    """Defaults from benchmarks/personalization.py (prior, prior_strength and memory searched)."""

    prior: float = 0.5
    memory: float = 8.0
    rejection: float = 1.5
    caption: float = 2.0
    trending: float = 0.0
    prior_strength: float = 20.0  # photos' worth of global prior in p_user
    half_life_days: float = 365.0
    neighbours: int = 10
    min_similarity: float = 0.6  # cosine between CLIP image embeddings
    earned_trust: bool = True  # scale the history terms by each person's trust (bot/core/trust.py)


@dataclass
class GlobalPrior:
    """How often each tag is accepted across everyone (and, for trending, recently)."""

    counts: dict[str, float]
    photos: float
    vocabulary_size: int
    recent_counts: dict[str, float] | None = None
    recent_photos: float = 0.0
    trust_wins: float = 0.0  # everyone's answered photos where personalisation won / lost
    trust_losses: float = 0.0

    def probability(self, tags: list[str]) -> np.ndarray:
        """Share of everyone's photos that got each tag, smoothed towards an even spread."""
        base = min(TYPICAL_TAGS_PER_PHOTO / self.vocabulary_size, 0.5)
        counts = np.array([self.counts.get(tag, 0.0) for tag in tags], dtype=np.float64)
        return (counts + GLOBAL_SMOOTHING * base) / (self.photos + GLOBAL_SMOOTHING)

    def trending_lift(self, tags: list[str]) -> np.ndarray:
        """log(recent share / long-term share); the recent share is smoothed towards the
        long-term one, so a tag nobody used lately is not 'trending' by default."""
        long_term = self.probability(tags)
        recent = np.array([(self.recent_counts or {}).get(t, 0.0) for t in tags], np.float64)
        smoothed = (recent + TRENDING_SMOOTHING * long_term) / (
            self.recent_photos + TRENDING_SMOOTHING
        )
        return np.log(smoothed) - np.log(long_term)


# Per photo row: two small index arrays, a dict entry and three list slots; per tag: a dict
# entry, a list slot and the string.
ROW_OVERHEAD_BYTES = 400
TAG_OVERHEAD_BYTES = 200


class UserProfile:
    """A person's history, arranged for fast ranking, and updated in place as they answer.

    One row per answered photo (its embedding, time decay and the tags accepted on it) and a
    few counts per tag. An answer changes one row and the counts of its tags: milliseconds,
    even for a person with 10,000 photos, instead of re-reading the whole history.
    """

    def __init__(self, now: float, weights: Weights, dim: int = 0):
        self.now, self.weights = now, weights
        self.tags: list[str] = []  # every tag the person has a verdict on
        self._column: dict[str, int] = {}
        self._row: dict[int, int] = {}  # photo id -> row
        self._embeddings = np.zeros((0, dim), dtype=np.float32)  # grows by doubling
        self._weights = np.zeros(0, dtype=np.float64)
        self.accepted_rows: list[np.ndarray] = []  # per row: columns of the accepted tags
        self.rejected_rows: list[np.ndarray] = []
        self.accepted_weight = np.zeros(0)  # (tags,) decayed photos with the tag accepted
        self.rejected_weight = np.zeros(0)  # (tags,) decayed rejections
        self.accepted_photos = 0.0  # decayed photos with at least one accepted tag
        self._evidence: list[int] = []  # per row: did personalisation win (+1), lose (-1)?
        self.wins = self.losses = 0

    @classmethod
    def from_history(cls, history: UserHistory, now: float, weights: Weights) -> UserProfile:
        profile = cls(now, weights, history.embeddings.shape[1] if history.photos else 0)
        ids = history.photo_ids or range(history.photos)
        evidence = history.evidence or [0] * history.photos
        for photo_id, taken, embedding, verdicts, won in zip(
            ids, history.photo_times, history.embeddings, history.verdicts, evidence, strict=True
        ):
            profile.set_photo(photo_id, taken, embedding, verdicts, won)
        return profile

    @property
    def photos(self) -> int:
        return len(self.accepted_rows)

    @property
    def nbytes(self) -> int:
        """About how much memory the profile holds, for the cache's byte budget: its arrays,
        and what Python spends on each photo row and each tag besides (measured with
        tracemalloc in tests/test_personalize.py)."""
        arrays = (self._embeddings, self._weights, self.accepted_weight, self.rejected_weight)
        return (
            sum(array.nbytes for array in arrays)
            + ROW_OVERHEAD_BYTES * self.photos
            + TAG_OVERHEAD_BYTES * len(self.tags)
        )

    @property
    def embeddings(self) -> np.ndarray:
        return self._embeddings[: self.photos]

    @property
    def photo_weights(self) -> np.ndarray:
        return self._weights[: self.photos]

    @property
    def is_empty(self) -> bool:
        return not self.tags

    def trust(self, prior: GlobalPrior) -> float:
        """How strongly this person's history terms count (bot/core/trust.py)."""
        everyone = everyones_rate(prior.trust_wins, prior.trust_losses)
        return trust_multiplier(self.wins, self.losses, everyone)

    def set_photo(
        self,
        photo_id: int,
        taken: float,
        embedding: np.ndarray,
        verdicts: dict[str, int],
        evidence: int = 0,
    ) -> None:
        """What the person now says about one photo (all of it: the latest verdict per tag),
        and whether personalisation won on it (bot.core.trust.personal_order_won)."""
        accepted = self._columns(tag for tag, verdict in verdicts.items() if verdict > 0)
        rejected = self._columns(tag for tag, verdict in verdicts.items() if verdict < 0)
        row = self._row.get(photo_id)
        if row is None:
            row = self._append(photo_id, taken, embedding)
        else:
            self._count(row, -1)
        self.accepted_rows[row], self.rejected_rows[row] = accepted, rejected
        self._evidence[row] = evidence
        self._count(row, +1)

    def remove_photo(self, photo_id: int) -> None:
        """The photo has no verdicts left (every answer on it was undone)."""
        row = self._row.pop(photo_id, None)
        if row is None:
            return
        self._count(row, -1)
        last = self.photos - 1
        if row != last:  # the last row takes its place
            moved = next(photo for photo, at in self._row.items() if at == last)
            self._row[moved] = row
            self._embeddings[row], self._weights[row] = self._embeddings[last], self._weights[last]
            self.accepted_rows[row] = self.accepted_rows[last]
            self.rejected_rows[row] = self.rejected_rows[last]
            self._evidence[row] = self._evidence[last]
        self.accepted_rows.pop()
        self.rejected_rows.pop()
        self._evidence.pop()

    def _columns(self, tags) -> np.ndarray:
        columns = []
        for tag in tags:
            if tag not in self._column:
                self._column[tag] = len(self.tags)
                self.tags.append(tag)
                self.accepted_weight = np.append(self.accepted_weight, 0.0)
                self.rejected_weight = np.append(self.rejected_weight, 0.0)
            columns.append(self._column[tag])
        return np.array(sorted(columns), dtype=np.int32)

    def _append(self, photo_id: int, taken: float, embedding: np.ndarray) -> int:
        row = self.photos
        if row == len(self._embeddings):
            capacity = max(16, 2 * row)
            grown = np.zeros((capacity, len(embedding)), dtype=np.float32)
            weights = np.zeros(capacity)
            if row:
                grown[:row], weights[:row] = self._embeddings[:row], self._weights[:row]
            self._embeddings, self._weights = grown, weights
        self._embeddings[row] = embedding
        age_days = max(self.now - taken, 0.0) / SECONDS_PER_DAY
        self._weights[row] = 0.5 ** (age_days / self.weights.half_life_days)
        self._row[photo_id] = row
        self.accepted_rows.append(np.zeros(0, dtype=np.int32))
        self.rejected_rows.append(np.zeros(0, dtype=np.int32))
        self._evidence.append(0)
        return row

    def _count(self, row: int, sign: int) -> None:
        self.wins += sign * (self._evidence[row] > 0)
        self.losses += sign * (self._evidence[row] < 0)
        weight = sign * self._weights[row]
        self.accepted_weight[self.accepted_rows[row]] += weight
        self.rejected_weight[self.rejected_rows[row]] += weight
        if len(self.accepted_rows[row]):
            self.accepted_photos += weight


def caption_words(caption: str | None) -> set[str]:
    """The caption's words and hashtags as hashtags read them: lower case, no '#' or
    punctuation, singular (`Dogs!` and `dogs` mean #dog, `beaches` #beach)."""
    return {singular(word.lower()) for word in re.findall(r"#?(\w+)", caption or "")}


def singular(word: str) -> str:
    """English plurals, by rule: enough to match a caption's words to hashtags.

    A few lines rather than a library (inflect): only regular plurals matter here, and a wrong
    guess costs nothing worse than a caption word that does not match.
    """
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"  # puppies
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]  # beaches, dishes, glasses, boxes
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]  # dogs, shoes
    return word


@dataclass
class Ranking:
    """Every candidate tag, best first, with what went into its place."""

    tags: list[str]
    scores: np.ndarray  # final score (a probability), best first
    model: np.ndarray  # the model's own logit
    personal: np.ndarray  # the model's logit plus the history terms at full strength

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        return [
            (tag, float(score)) for tag, score in zip(self.tags[:k], self.scores[:k], strict=True)
        ]

    def shown(self, k: int) -> list[ShownEntry]:
        """What the store keeps of the top k: what bot.core.trust judges personalisation by."""
        return [
            ShownEntry(tag, float(score), float(model), float(personal))
            for tag, score, model, personal in zip(
                self.tags[:k], self.scores[:k], self.model[:k], self.personal[:k], strict=True
            )
        ]


def rank(
    scores: np.ndarray,
    vocabulary: list[str],
    embedding: np.ndarray,
    profile: UserProfile | None,
    global_prior: GlobalPrior,
    weights: Weights,
    caption: str | None = None,
    blocked: frozenset[str] = frozenset(),
) -> Ranking:
    """Every candidate tag (vocabulary + the person's own) but the `blocked` ones, best first:
    `.top(k)` gives (tag, final score) pairs."""
    known = set(vocabulary)
    own_tags = [tag for tag in (profile.tags if profile else []) if tag not in known]
    candidates = [*vocabulary, *own_tags]
    # The model knows nothing of a person's own tags: they start from how common they are.
    base = np.concatenate(
        [np.asarray(scores, dtype=np.float64), global_prior.probability(own_tags)]
    )
    if blocked:
        allowed = [i for i, tag in enumerate(candidates) if tag not in blocked]
        candidates, base = [candidates[i] for i in allowed], base[allowed]
    model = _logit(base)
    history = np.zeros_like(model)
    trust = 1.0
    if profile is not None and not profile.is_empty:
        history = _history_terms(candidates, embedding, profile, global_prior, weights)
        trust = profile.trust(global_prior) if weights.earned_trust else 1.0
    logits = model + trust * history
    if caption and weights.caption:
        words = caption_words(caption)
        named = [tag in words or singular(tag) in words for tag in candidates]
        logits += weights.caption * np.array(named, dtype=np.float64)
    if weights.trending and global_prior.recent_counts:
        logits += weights.trending * global_prior.trending_lift(candidates)
    order = np.argsort(-logits, kind="stable")
    return Ranking(
        [candidates[i] for i in order],
        _sigmoid(logits[order]),
        model[order],
        (model + history)[order],
    )


def _history_terms(
    candidates: list[str],
    embedding: np.ndarray,
    profile: UserProfile,
    global_prior: GlobalPrior,
    weights: Weights,
) -> np.ndarray:
    column = {tag: i for i, tag in enumerate(profile.tags)}
    positions = np.array([column.get(tag, -1) for tag in candidates])
    in_history = positions >= 0
    total = np.zeros(len(candidates), dtype=np.float64)

    # Prior: p_user smoothed towards p_global; a log ratio, 0 when there is no history.
    p_global = global_prior.probability(candidates)
    accepted = np.zeros(len(candidates))
    accepted[in_history] = profile.accepted_weight[positions[in_history]]
    strength = weights.prior_strength
    p_user = (accepted + strength * p_global) / (profile.accepted_photos + strength)
    total += weights.prior * (np.log(p_user) - np.log(p_global))

    # Memory: the person's most similar past photos vote for the tags they accepted there.
    similar = _similar_photos(embedding, profile, weights)
    if similar is not None:
        rows, strengths = similar
        votes = np.zeros(len(profile.tags))
        for row, strength in zip(rows, strengths, strict=True):
            votes[profile.accepted_rows[row]] += strength
        votes /= strengths.sum() + MEMORY_SMOOTHING
        total[in_history] += weights.memory * votes[positions[in_history]]

    # Rejections: a saturating penalty.
    total[in_history] -= weights.rejection * np.log1p(
        profile.rejected_weight[positions[in_history]]
    )
    return total


def _similar_photos(embedding: np.ndarray, profile: UserProfile, weights: Weights):
    if len(profile.embeddings) == 0:
        return None
    similarity = profile.embeddings @ np.asarray(embedding, dtype=np.float32)
    count = min(weights.neighbours, len(similarity))
    nearest = np.argpartition(-similarity, count - 1)[:count]
    nearest = nearest[similarity[nearest] >= weights.min_similarity]
    if len(nearest) == 0:
        return None
    closeness = (similarity[nearest] - weights.min_similarity) / (1 - weights.min_similarity)
    return nearest, (closeness * profile.photo_weights[nearest]).astype(np.float32)


def _logit(p: np.ndarray) -> np.ndarray:
    # Float64 with a tiny clip: distinct float32 scores stay distinct, so order is kept exactly.
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + e^-x), without overflow
