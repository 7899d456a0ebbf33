"""The ranking maths of personalisation, on hand-made histories."""

import time

import numpy as np
import pytest

from benchmarks.personalization import heavy_history
from bot.core.personalize import GlobalPrior, UserProfile, Weights, rank, singular
from bot.store import UserHistory

NAMED = ["beach", "sea", "dog", "cat", "food", "sun"]
VOCAB = NAMED + [f"filler{i}" for i in range(94)]  # a realistic prior needs a real-sized vocab
NOW = time.time()
DAY = 86_400.0
WEIGHTS = Weights()


def unit(*values) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


PHOTO_A, PHOTO_B = unit(1, 0, 0, 0), unit(0, 1, 0, 0)
NEAR_A = unit(1, 0.1, 0, 0)


def profile(*photos: tuple[np.ndarray, dict[str, int], float]) -> UserProfile:
    """photos: (embedding, {tag: verdict}, age in days)."""
    history = UserHistory(
        photo_times=np.array([NOW - age * DAY for _, _, age in photos]),
        embeddings=np.stack([embedding for embedding, _, _ in photos]),
        verdicts=[verdicts for _, verdicts, _ in photos],
    )
    return UserProfile.from_history(history, NOW, WEIGHTS)


def ranked(scores, embedding, user_profile, caption=None, prior=None, weights=WEIGHTS):
    prior = prior or GlobalPrior({}, 0, len(VOCAB))
    result = rank(
        np.array(scores, np.float32), VOCAB, embedding, user_profile, prior, weights, caption
    ).top()
    return [tag for tag, _ in result]


SCORES = [0.6, 0.55, 0.5, 0.45, 0.4, 0.35] + [0.01] * 94


def test_a_new_user_gets_exactly_the_unpersonalised_ranking():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.random(len(VOCAB)).astype(np.float32)
        scores[rng.integers(len(VOCAB))] = scores[0]  # ties must keep their order too
        expected = [VOCAB[i] for i in np.argsort(-scores, kind="stable")]
        empty = UserProfile.from_history(
            UserHistory(np.zeros(0), np.zeros((0, 4)), []), NOW, WEIGHTS
        )
        busy_prior = GlobalPrior({"dog": 50, "cat": 10}, 60, len(VOCAB))
        for user_profile in (None, empty):
            result = rank(scores, VOCAB, PHOTO_A, user_profile, busy_prior, WEIGHTS).top()
            assert [tag for tag, _ in result] == expected
            np.testing.assert_allclose([s for _, s in result], np.sort(scores)[::-1], rtol=1e-5)


def test_habitual_tags_rise_and_rejected_tags_fall():
    habits = profile(*[(PHOTO_B, {"dog": 1, "beach": -1}, 1) for _ in range(5)])
    order = ranked(SCORES, PHOTO_A, habits)
    assert order[0] == "dog"
    assert order.index("beach") > order.index("food")  # was first, now below the 5th


def test_own_out_of_vocabulary_tags_come_back_on_similar_photos_only():
    mine = profile((PHOTO_A, {"beach": 1, "mysurfclub": 1}, 2), (PHOTO_B, {"food": 1}, 2))
    near = ranked(SCORES, NEAR_A, mine)
    far = ranked(SCORES, PHOTO_B, mine)
    assert near.index("mysurfclub") < 5
    assert far.index("mysurfclub") > far.index("food")
    assert "mysurfclub" not in ranked(SCORES, NEAR_A, None)


def test_old_habits_count_less_than_recent_ones():
    recent = profile(*[(PHOTO_B, {"cat": 1}, 1) for _ in range(3)])
    old = profile(*[(PHOTO_B, {"cat": 1}, 5 * 365) for _ in range(3)])
    lift = {}
    for name, user_profile in (("recent", recent), ("old", old)):
        result = dict(rank(np.array(SCORES, np.float32), VOCAB, PHOTO_A, user_profile,
                                  GlobalPrior({}, 0, len(VOCAB)), WEIGHTS).top())  # fmt: skip
        lift[name] = result["cat"]
    assert lift["recent"] > lift["old"] > SCORES[3]


def test_the_caption_informs_the_ranking():
    assert ranked(SCORES, PHOTO_A, None, caption="Lunch with my #dog")[0] == "dog"
    no_caption = Weights(caption=0)
    assert ranked(SCORES, PHOTO_A, None, caption="dog", weights=no_caption)[0] == "beach"


@pytest.mark.parametrize(
    ("caption", "tag"),
    [("dogs", "dog"), ("Dogs!", "dog"), ("my DOG.", "dog"), ("#Dogs", "dog"), ("two CATS", "cat")],
)
def test_caption_words_match_hashtags_whatever_their_case_plural_or_punctuation(caption, tag):
    assert ranked(SCORES, PHOTO_A, None, caption=caption)[0] == tag


def test_plurals_by_rule():
    words = "beaches puppies glasses boxes dishes shoes dogs bus class"
    assert [singular(word) for word in words.split()] == [
        "beach", "puppy", "glass", "box", "dish", "shoe", "dog", "bus", "class",
    ]  # fmt: skip


def test_trending_is_optional_and_global():
    prior = GlobalPrior(
        {"food": 5, "beach": 40}, 100, len(VOCAB), recent_counts={"food": 5}, recent_photos=5
    )
    assert ranked(SCORES, PHOTO_A, None, prior=prior)[0] == "beach"  # off by default
    trending = Weights(trending=2.0)
    assert ranked(SCORES, PHOTO_A, None, prior=prior, weights=trending)[0] == "food"


class CountingRows(list):
    """A profile's per-photo tag rows, counting how many of them ranking reads."""

    reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return super().__getitem__(index)


def test_ranking_with_ten_thousand_past_photos_reads_only_the_nearest_ones():
    # Wall time is measured in benchmarks/personalization.py --profile-only; here, the work:
    # one matrix product over the embeddings, then the tags of `neighbours` photos at most.
    rng = np.random.default_rng(0)
    vocabulary = [f"tag{i}" for i in range(997)]
    history = heavy_history(rng, NOW)
    big = UserProfile.from_history(history, NOW, WEIGHTS)
    prior = GlobalPrior({f"tag{i}": i for i in range(997)}, 5000, 997)
    scores, photo = rng.random(997).astype(np.float32), history.embeddings[42]
    plain = rank(scores, vocabulary, photo, None, prior, WEIGHTS).top()
    big.accepted_rows = CountingRows(big.accepted_rows)
    personal = rank(scores, vocabulary, photo, big, prior, WEIGHTS).top()
    assert 0 < big.accepted_rows.reads <= WEIGHTS.neighbours
    # The same photo was answered before: its vocabulary hashtags rise, and the person's own
    # hashtag on it (outside the vocabulary) is offered too.
    position = {tag: i for i, (tag, _) in enumerate(personal)}
    plain_position = {tag: i for i, (tag, _) in enumerate(plain)}
    accepted = [tag for tag in history.verdicts[42] if tag in plain_position]
    assert accepted and all(position[tag] < plain_position[tag] for tag in accepted)
    (own,) = [tag for tag in history.verdicts[42] if tag.startswith("own")]
    assert own in position


def test_a_profile_updated_in_place_ranks_like_one_rebuilt_from_scratch():
    rng = np.random.default_rng(3)
    photos = {i: (unit(*rng.normal(size=4)), NOW - i * DAY) for i in range(12)}
    answers = {i: {VOCAB[rng.integers(6)]: 1, f"own{i % 3}": 1} for i in photos}
    answers[4] = {"beach": -1, "dog": 1}
    live = UserProfile.from_history(UserHistory(np.zeros(0), np.zeros((0, 4)), []), NOW, WEIGHTS)
    for i, verdicts in answers.items():
        live.set_photo(i, photos[i][1], photos[i][0], verdicts)
    live.set_photo(2, photos[2][1], photos[2][0], {"cat": 1})  # a changed mind
    live.remove_photo(7)  # every answer on it undone
    answers[2] = {"cat": 1}
    del answers[7]
    ids = sorted(answers)
    rebuilt = UserProfile.from_history(
        UserHistory(
            np.array([photos[i][1] for i in ids]),
            np.stack([photos[i][0] for i in ids]),
            [answers[i] for i in ids],
            ids,
        ),
        NOW,
        WEIGHTS,
    )
    for photo in (PHOTO_A, PHOTO_B, NEAR_A, photos[3][0]):
        assert ranked(SCORES, photo, live)[:15] == ranked(SCORES, photo, rebuilt)[:15]
    np.testing.assert_allclose(
        [live.accepted_weight[live.tags.index(t)] for t in rebuilt.tags], rebuilt.accepted_weight
    )


def test_an_answer_changes_one_row_of_a_ten_thousand_photo_profile():
    # Wall time is measured in benchmarks/personalization.py --profile-only; here, the work:
    # no rebuild and no copy of the 10,000 rows, only the answered photo's tags' counts move.
    history = heavy_history(np.random.default_rng(1), NOW)
    big = UserProfile.from_history(history, NOW, WEIGHTS)
    embeddings, rows, before = big._embeddings, list(big.accepted_rows), big.accepted_weight.copy()
    for i in range(30):
        big.set_photo(10_000 + i, NOW, history.embeddings[i], {"tag1": 1, f"new{i}": 1})
    assert big.photos == 10_030
    assert big._embeddings is embeddings  # grown into, not copied
    assert all(big.accepted_rows[i] is row for i, row in enumerate(rows))  # untouched
    changed = np.flatnonzero(big.accepted_weight[: len(before)] != before)
    assert [big.tags[i] for i in changed] == ["tag1"]
    assert big.tags[len(before) :] == [f"new{i}" for i in range(30)]


def test_a_profiles_nbytes_is_what_it_really_holds():
    """The profile cache is budgeted by nbytes, so nbytes must track real memory (tracemalloc),
    within a quarter either way, for a heavy person with 10,000 photos."""
    import tracemalloc

    now = time.time()
    history = heavy_history(np.random.default_rng(0), now)
    tracemalloc.start()
    built = UserProfile.from_history(history, now, Weights())
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert 0.75 * held <= built.nbytes <= 1.25 * held, (built.nbytes, held)
