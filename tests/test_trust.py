"""Trust earned per person: history terms count as much as the person's history has earned."""

import time

import numpy as np
import pytest
import torch

from bot.core.personalize import GlobalPrior, UserProfile, Weights, rank
from bot.core.service import HashtagService, UserRef
from bot.core.trust import TRUST_MAX, personal_order_won, trust_multiplier
from bot.store import Store
from bot.store.records import ShownEntry
from inference.engine import InferenceEngine
from tests.corpus import jpeg

NOW = time.time()
VOCAB = ["beach", "sea", "dog", "cat", "food", "sun"] + [f"filler{i}" for i in range(94)]
SCORES = np.array([0.6, 0.55, 0.5, 0.45, 0.4, 0.35] + [0.01] * 94, np.float32)
PHOTO = np.array([1, 0, 0, 0], np.float32)

# (tag, shown score, model logit, full-strength personalised logit), in the order shown.
SHOWN = [
    ShownEntry("dog", 0.9, 0.1, 3.0),
    ShownEntry("beach", 0.8, 2.0, 2.0),
    ShownEntry("sea", 0.7, 1.0, 1.0),
]


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ({"dog": 1}, 1),  # the hashtag the history brought up was the one accepted
        ({"beach": 1}, -1),  # the history pushed the accepted one down
        ({"dog": -1, "beach": 1, "sea": 1}, -1),
        ({}, 0),  # nothing accepted: nothing to judge
        ({"dog": 1, "beach": 1, "sea": 1}, 0),  # everything accepted: any order is as good
    ],
)
def test_a_photo_is_judged_on_the_hashtags_that_were_shown(verdicts, expected):
    assert personal_order_won(SHOWN, verdicts) == expected


def test_a_thumbs_up_is_no_evidence_even_where_personalisation_changed_what_was_shown():
    """#dog (model logit 0.1, lifted to 3.0 by the history) stood in for a tag the model would
    have shown; everything shown was accepted, as a 👍 does. Had the model's own pick been
    shown, a person who accepts everything would have accepted it too: no winner (see the
    module's docstring and benchmarks/personalization.py --thumbs-up)."""
    thumbs_up = {entry.tag: 1 for entry in SHOWN}
    assert personal_order_won(SHOWN, thumbs_up) == 0
    # Typed hashtags that were not shown change nothing: their fate under either order is
    # unknown.
    assert personal_order_won(SHOWN, thumbs_up | {"mine": 1}) == 0
    # Picking the same hashtags one by one minus the one the history brought is a loss.
    assert personal_order_won(SHOWN, {"beach": 1, "sea": 1}) == -1


def test_old_suggestions_without_logits_say_nothing():
    assert personal_order_won([ShownEntry("dog", 0.9), ShownEntry("beach", 0.8)], {"dog": 1}) == 0


def test_trust_is_shrunk_towards_everyone_and_bounded():
    assert trust_multiplier(0, 0, everyone=0.75) == pytest.approx(1.0)  # today's weights
    assert trust_multiplier(0, 40, everyone=0.75) == 0.0  # always wrong: the model's ranking
    assert trust_multiplier(200, 0, everyone=0.75) == pytest.approx(TRUST_MAX, rel=0.05)
    one_loss, two_losses = trust_multiplier(0, 1, 0.75), trust_multiplier(0, 2, 0.75)
    assert 1.0 > one_loss > two_losses > 0  # a little evidence moves it a little


def profile_with(evidence: list[int]) -> UserProfile:
    """Five photos on which the person accepted #dog, with the given record."""
    profile = UserProfile(NOW, Weights(), 4)
    for i, won in enumerate(evidence):
        profile.set_photo(i, NOW, np.array([0, 1, 0, 0], np.float32), {"dog": 1}, won)
    return profile


DEFAULTS, WITHOUT_TRUST = Weights(), Weights(earned_trust=False)


def ranked(profile: UserProfile, weights: Weights = DEFAULTS) -> list[str]:
    prior = GlobalPrior({}, 0, len(VOCAB))
    return [tag for tag, _ in rank(SCORES, VOCAB, PHOTO, profile, prior, weights).top()]


def test_a_person_whose_history_never_helped_gets_the_models_ranking():
    plain = [VOCAB[i] for i in np.argsort(-SCORES, kind="stable")]
    assert ranked(profile_with([-1] * 30)) == plain
    assert ranked(profile_with([-1] * 30), WITHOUT_TRUST)[0] == "dog"


def test_a_person_whose_history_keeps_helping_gets_more_than_the_defaults():
    def lift(profile: UserProfile, weights: Weights = DEFAULTS) -> float:
        prior = GlobalPrior({}, 0, len(VOCAB))
        return dict(rank(SCORES, VOCAB, PHOTO, profile, prior, weights).top())["dog"]

    earned, untested = lift(profile_with([1] * 30)), lift(profile_with([0] * 30))
    assert earned > untested == pytest.approx(lift(profile_with([1] * 30), WITHOUT_TRUST))


async def test_the_store_keeps_each_photos_verdict_on_personalisation(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    try:
        user = await store.user_id("telegram", "1")
        photo = await store.add_suggestion(user, "telegram", PHOTO, SHOWN, "v")
        await store.record_feedback(photo, user, ["dog"], 1, "button")
        assert (await store.personalisation_record()) == (1, 0)
        history = await store.user_history(user)
        assert history.evidence == [1]
        await store.record_feedback(photo, user, ["beach"], 1, "typed")
        await store.remove_feedback(photo, "button")  # only #beach is left: a loss
        assert (await store.personalisation_record()) == (0, 1)
        assert (await store.suggestion(photo)).shown == SHOWN  # one decoder, every value back
    finally:
        await store.close()


async def test_trust_earned_in_one_process_counts_at_once(tiny_model, tmp_path):
    """The running service's cached profile carries each answer's win or loss, so the next
    suggestion is ranked as a freshly started bot would rank it from the same database."""
    store = await Store.open(tmp_path / "bot.sqlite3")
    alice = UserRef("telegram", "1")
    try:
        async with InferenceEngine(tiny_model, torch.device("cpu")) as engine:
            running = HashtagService(engine, store, rate_limit=None, global_prior_ttl=0)
            photo = jpeg(seed=40)
            first = await running.suggest(alice, [photo])
            habit = first.tags[-1][0]  # the model's last pick, which Alice always takes
            for _ in range(4):
                suggestion = await running.suggest(alice, [photo])
                await running.accept(alice, suggestion.id, [habit])
            assert (await store.personalisation_record())[0] >= 1  # her history did win
            after_restart = HashtagService(engine, store, rate_limit=None, global_prior_ttl=0)
            expected = dict((await after_restart.suggest(alice, [photo])).tags)
            assert dict((await running.suggest(alice, [photo])).tags) == pytest.approx(expected)
    finally:
        await store.close()
