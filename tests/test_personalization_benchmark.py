"""The personalisation benchmark's hard population holds what issue 23 asks of it: no scored
photo is a re-shoot of an answered one, embeddings do not spell out the true hashtags, a
person's habits are not in their photos, and the image model is about as good as HARRISON's."""

import numpy as np
import pytest

from benchmarks.personalization import (
    EASY,
    HARD,
    HEAD_CHECK_PHOTOS,
    SHOWN,
    HardWorld,
    Person,
    World,
    head_figures,
    make_people,
    thumbs_credit,
)
from bot.core.personalize import Ranking

RESHOOT_COSINE = 0.97  # a re-shoot is the original plus noise 0.03: cosine about 0.99


@pytest.fixture(scope="module")
def world() -> HardWorld:
    return HardWorld(seed=3, head_photos=5000)


def closest_answered(person: Person, world: World, answered: int, scored: int) -> np.ndarray:
    """For each of `scored` test photos, its highest cosine to the person's answered ones."""
    for _ in range(answered):
        person.post(world)
    history = np.array([photo.embedding for photo in person.posted])
    tests = np.array([person.post(world, remember=False).embedding for _ in range(scored)])
    return (tests @ history.T).max(axis=1)


def test_no_scored_photo_of_the_hard_population_is_a_reshoot(world):
    person = make_people(world, 1, 0, HARD)[0]
    hard = closest_answered(person, world, answered=60, scored=200)
    history = np.array([photo.embedding for photo in person.posted])
    between = history @ history.T - 2 * np.eye(len(history))
    assert (between.max(axis=1) > RESHOOT_COSINE).any()  # the history does hold re-shoots
    assert hard.max() < RESHOOT_COSINE
    # The check can fail: with the easy habits, about 30 % of the scored photos are re-shoots.
    easy_person = make_people(world, 1, 0, EASY)[0]
    easy = closest_answered(easy_person, world, answered=60, scored=200)
    assert 0.15 < np.mean(easy > RESHOOT_COSINE) < 0.45


def test_hard_embeddings_are_not_a_function_of_the_true_hashtags(world):
    person = make_people(world, 1, 0, HARD)[0]
    topic, tags = world.draw_tags(person.topics[0])
    same_tags = np.array(
        [world.photo(tags, set(), topic, person.style).embedding for _ in range(50)]
    )
    cosines = (same_tags @ same_tags.T)[np.triu_indices(50, 1)]
    assert cosines.max() < 0.9  # the same hashtags, the same person: still different photos
    # A person's habits are theirs, not the photo's: the handle changes neither the embedding
    # nor the model's scores.
    state = world.rng.bit_generator.state
    with_handle = world.photo(tags, {person.handle}, topic, person.style)
    world.rng.bit_generator.state = state
    without = world.photo(tags, set(), topic, person.style)
    assert np.array_equal(with_handle.embedding, without.embedding)
    assert np.array_equal(with_handle.scores, without.scores)
    assert person.handle in with_handle.truth


def test_the_hard_head_is_about_as_good_as_the_harrison_papers_model(world):
    recall, precision = head_figures(world, HEAD_CHECK_PHOTOS)
    assert 0.17 < recall < 0.25  # the paper's best: 0.214
    assert 0.25 < precision < 0.45  # the paper's best: 0.302


def test_the_handle_is_on_some_posts_only(world):
    person = make_people(world, 1, 0, HARD)[0]
    photos = [person.post(world, remember=False) for _ in range(400)]
    share = np.mean([person.handle in photo.truth for photo in photos])
    assert share == pytest.approx(HARD.handle, abs=0.07)


def test_the_thumbs_up_studys_counterfactual_credits_only_a_changed_and_fully_accepted_list():
    tags = [f"t{i}" for i in range(SHOWN + 2)]
    model = np.arange(SHOWN + 2, 0, -1.0)  # the model's own order is the list's order
    unchanged = Ranking(tags, np.zeros(len(tags)), model, model)
    changed_model = model.copy()
    changed_model[SHOWN - 1], changed_model[SHOWN] = model[SHOWN], model[SHOWN - 1]
    changed = Ranking(tags, np.zeros(len(tags)), changed_model, model)  # t(SHOWN-1) brought in
    everything = dict.fromkeys(tags[:SHOWN], 1)
    assert thumbs_credit(changed, everything) == 1
    assert thumbs_credit(unchanged, everything) == 0
    assert thumbs_credit(changed, everything | {tags[0]: -1}) == 0
