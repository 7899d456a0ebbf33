"""The zero-shot head's popularity prior: counted as issue 23 asks, in the head, in its key."""

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import prior
from inference.backends.calibration import calibration_batch
from inference.loading import load_zero_shot
from inference.vocab import load_vocabulary
from inference.zeroshot_cache import zero_shot_key

HARRISON = Path(__file__).resolve().parents[2] / "shared" / "harrison"


def most_used(count: int) -> set[str]:
    """The hashtags used most on photos not collected under them, from the shipped counts."""
    vocabulary = load_vocabulary()
    log_prior = prior.centred_log_prior(vocabulary)
    order = np.argsort(-np.array(log_prior), kind="stable")
    return {vocabulary[i] for i in order[:count]}


def test_a_hashtag_is_counted_only_on_photos_not_collected_under_it():
    paths = ["d/yellow/1.jpg", "d/yellow/2.jpg", "d/sea/3.jpg", "d/sea/4.jpg"]
    tags = ["yellow sun", "yellow", "sea yellow", "sea sun #Sun"]
    counts = prior.count_outside_collections(paths, tags)
    assert counts["yellow"] == (1, 2)  # one use among the two photos collected elsewhere
    assert counts["sea"] == (0, 2)
    assert counts["sun"] == (2, 4)  # no collection: every photo, each photo once


@pytest.mark.skipif(not HARRISON.is_dir(), reason="HARRISON's label files are not here")
def test_the_shipped_counts_are_harrisons_label_files_counted_that_way():
    paths = [line for line in (HARRISON / "data_list.txt").read_text().splitlines() if line]
    tags = (HARRISON / "tag_list.txt").read_text().splitlines()[: len(paths)]
    counts = prior.count_outside_collections(paths, tags)
    shipped, _ = prior._shipped_counts()
    assert len(shipped) == 997
    assert all(counts[tag] == shipped[tag] for tag in shipped)
    assert shipped["yellow"][0] == 211  # the figure: 2,667 uses counted naively


def test_the_prior_is_smoothed_centred_and_absent_without_statistics(caplog):
    caplog.set_level(logging.INFO, logger="inference.prior")
    log_prior = prior.centred_log_prior(["love", "yellow", "wedding", "myownhashtag"])
    assert log_prior[0] > log_prior[2] > log_prior[1]  # love > wedding > yellow (outside)
    assert all(math.isfinite(value) for value in log_prior)
    typical = float(np.median(log_prior[:3]))
    assert log_prior[3] == pytest.approx(typical)  # unknown: a typical hashtag's
    assert "1 without statistics" in caplog.text

    caplog.clear()
    assert prior.centred_log_prior(["myownhashtag", "another"]) is None
    assert prior.centred_log_prior(["myownhashtag", "another"]) is None
    said = [record for record in caplog.records if "no usage statistics" in record.message]
    assert len(said) == 1  # one log line, not one per call


def test_the_cache_key_changes_with_the_prior(monkeypatch):
    vocabulary = ["love", "sea"]
    before = zero_shot_key("ViT-B-32", "openai", vocabulary)
    monkeypatch.setattr(prior, "counts_digest", lambda: "other counts")
    from inference import zeroshot_cache

    monkeypatch.setattr(zeroshot_cache, "counts_digest", prior.counts_digest)
    assert zero_shot_key("ViT-B-32", "openai", vocabulary) != before


def test_a_model_that_sees_nothing_suggests_popular_hashtags(tiny_clip_files, tmp_path):
    """The issue's bar: a random tiny CLIP's default zero-shot top-5 over 30 photos has at least
    a quarter among the 100 most used hashtags (chance: a tenth); without the prior it does not."""
    config_path, weights_path = tiny_clip_files
    vocabulary = load_vocabulary()
    model = load_zero_shot(config_path, weights_path, vocabulary, cache_dir=tmp_path)
    pixels = torch.from_numpy(calibration_batch(model.spec, count=30))
    with torch.no_grad():
        logits = model(pixels)[0].numpy()
    popular = most_used(100)

    def share_popular(scores: np.ndarray) -> float:
        top5 = np.argsort(-scores, axis=1)[:, :5]
        return float(np.mean([vocabulary[i] in popular for i in top5.ravel()]))

    with_prior = share_popular(logits)
    without_prior = share_popular(logits - model.head.bias.detach().numpy())
    assert with_prior >= 0.25
    assert without_prior < 0.25  # the prior, not the random weights, makes the difference


def test_a_clearly_visible_hashtag_still_wins_over_a_popular_one(tiny_clip_files, tmp_path):
    """With a real CLIP's scale (100), a photo whose embedding fits a rare hashtag clearly (a
    cosine of 0.28 against 0.20 for the rest, CLIP's usual gap between a fitting caption and an
    unrelated one) gets that hashtag first, above the most used ones."""
    config_path, weights_path = tiny_clip_files
    vocabulary = load_vocabulary()
    model = load_zero_shot(config_path, weights_path, vocabulary, cache_dir=tmp_path)
    log_prior = np.array(prior.centred_log_prior(vocabulary))
    rare = vocabulary[int(np.argmin(log_prior))]
    scale = 100.0
    cosines = np.full(len(vocabulary), 0.20)
    cosines[vocabulary.index(rare)] = 0.28
    bias = model.head.bias.detach().numpy()
    offset = bias - prior.DEFAULT_PRIOR_ALPHA * log_prior  # the head's common offset
    assert np.allclose(offset, offset[0], atol=1e-4)
    logits = scale * (cosines - 0.2) + prior.DEFAULT_PRIOR_ALPHA * log_prior
    assert vocabulary[int(np.argmax(logits))] == rare
