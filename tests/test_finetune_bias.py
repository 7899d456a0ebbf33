"""Selecting by precision@1 + recall@5, and fitting each hashtag's bias.

mAP ranks the photos within one hashtag, so no bias changes it; precision@1 and recall@5 rank
the hashtags within one photo, so they depend on the biases. These tests draw a world where
the true directions are known and only the biases are wrong.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from finetune import pipeline, training
from finetune.cli import main
from finetune.metrics import SELECTION_METRIC, ranking_metrics, selection_score
from finetune.training import TrainOptions, fit_biases, head_scores, train_linear_probe
from tests.synthetic_harrison import write_synthetic_harrison
from tests.test_finetune import tiny_run


def logistic_world(images: int, dim: int, tags: int, seed: int = 0):
    """(x, y, true head, start head): labels drawn from a logistic model with rare hashtags
    (about 4.5 a photo of 100); the start has the true directions and every bias off by
    U(-4, 4)."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(tags, dim)) * 2 / np.sqrt(dim)
    bias = rng.normal(-5.0, 1.0, size=tags)
    x = rng.normal(size=(images, dim)).astype(np.float32)
    chance = 1 / (1 + np.exp(-(x @ weight.T + bias)))
    y = (rng.random(chance.shape) < chance).astype(np.float32)
    true, start = nn.Linear(dim, tags), nn.Linear(dim, tags)
    with torch.no_grad():
        true.weight.copy_(torch.from_numpy(weight))
        true.bias.copy_(torch.from_numpy(bias))
        start.weight.copy_(true.weight)
        start.bias.copy_(true.bias + torch.from_numpy(rng.uniform(-4, 4, size=tags)))
    return x, y, true, start


def test_selection_score_is_precision_at_1_plus_recall_at_5():
    rng = np.random.default_rng(0)
    scores, truth = rng.normal(size=(50, 12)), rng.random((50, 12)) < 0.2
    metrics = ranking_metrics(scores, truth)
    assert selection_score(scores, truth) == pytest.approx(
        metrics["precision@1"] + metrics["recall@5"]
    )
    # A constant added to one hashtag's scores moves it, and leaves mAP where it was.
    shifted = scores.copy()
    shifted[:, 0] += 3
    assert ranking_metrics(shifted, truth)["map"] == pytest.approx(metrics["map"])
    assert selection_score(shifted, truth) != selection_score(scores, truth)


def test_fit_biases_finds_each_hashtags_maximum_likelihood_bias():
    x, y, true, start = logistic_world(images=20_000, dim=16, tags=20, seed=1)
    with torch.no_grad():
        start.bias[1] = true.bias[1] + 20  # far off: Newton's steps are bounded, then bracketed
    y[:, 2] = 0  # a hashtag nobody used: its bias goes down, but not to minus infinity
    fitted = nn.Linear(16, 20)
    fitted.load_state_dict(start.state_dict())
    fit_biases(fitted, torch.from_numpy(x), torch.from_numpy(y))

    used = np.ones(20, dtype=bool)
    used[2] = False
    error = (fitted.bias - true.bias).abs().detach().numpy()[used]
    assert error.mean() < 0.06 and error.max() < 0.25, error
    assert torch.isfinite(fitted.bias[2]) and fitted.bias[2] < start.bias[2]
    torch.testing.assert_close(fitted.weight, start.weight)  # the directions are left alone
    # The fit is the optimum: each used hashtag is predicted as often as it was used.
    predicted = torch.sigmoid(torch.from_numpy(head_scores(fitted, x))).sum(dim=0).numpy()
    np.testing.assert_allclose(predicted[used], y.sum(axis=0)[used], rtol=0.02)


def test_the_probe_fits_biases_that_matter():
    """HARRISON-sized (47,000 training photos), the true directions and wrong biases: the
    probe's precision@1 comes within 0.03 of the true model's, where it used to keep the
    start (Adam at lr 1e-3 moves a bias by about 2 over a run; early stopping by mAP, which
    no bias changes, kept the first epoch)."""
    x, y, true, start = logistic_world(images=57_000, dim=32, tags=100)
    train, val, test = slice(0, 47_000), slice(47_000, 52_000), slice(52_000, None)
    probe = train_linear_probe(start, x[train], y[train], x[val], y[val], TrainOptions(epochs=3))
    figures = {
        name: ranking_metrics(head_scores(head, x[test]), y[test])["precision@1"]
        for name, head in (("start", start), ("fitted", probe), ("true", true))
    }
    print(figures)
    assert figures["fitted"] > figures["true"] - 0.03
    assert figures["fitted"] > figures["start"] + 0.2


def test_metrics_name_the_selection_metric(tmp_path, tiny_clip_files):
    write_synthetic_harrison(tmp_path / "data", count=150, seed=4)
    assert (
        main(tiny_run(tmp_path / "data", tmp_path / "out", tiny_clip_files, "--epochs", "2")) == 0
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["selection_metric"] == SELECTION_METRIC == "precision@1 + recall@5 on validation"
    curve = metrics["wise_ft"]["validation_score"]
    assert (
        metrics["selection_score"]
        == curve[str(metrics["wise_ft"]["weight"])]
        == max(curve.values())
    )


def interrupt_after_first_epoch(monkeypatch):
    """Make stage 2 stop (as Ctrl-C would) once its first epoch is saved."""
    real_finetune = pipeline.finetune_encoder

    def interrupted(*args, save_progress, **kwargs):
        def save_then_stop(state):
            save_progress(state)
            raise KeyboardInterrupt

        return real_finetune(*args, save_progress=save_then_stop, **kwargs)

    monkeypatch.setattr(pipeline, "finetune_encoder", interrupted)
    return real_finetune


def test_a_resume_state_from_before_the_selection_metric_still_resumes(
    tmp_path, tiny_clip_files, monkeypatch, caplog
):
    """An older resume.pt kept `best_map` (a validation mAP): its best epoch is scored again
    by the selection metric, not compared as a mAP with the epochs to come."""
    write_synthetic_harrison(tmp_path / "data", count=200, seed=2)
    options = ("--unfreeze-blocks", "1", "--epochs", "3", "--batch-size", "64")
    argv = tiny_run(tmp_path / "data", tmp_path / "out", tiny_clip_files, *options)
    real_finetune = interrupt_after_first_epoch(monkeypatch)
    assert main(argv) == 130

    resume_path = tmp_path / "out" / "resume.pt"
    state = torch.load(resume_path, weights_only=True)
    assert state["selection_metric"] == SELECTION_METRIC
    expected = state.pop("best_score")
    del state["selection_metric"]
    state["best_map"] = 0.01  # an old state's mAP: not the scale the run compares on now
    torch.save(state, resume_path)

    initial_scores = []
    real_stopping = training.EarlyStopping

    class RecordingStopping(real_stopping):
        def __init__(self, patience, initial_state, initial_score):
            initial_scores.append(initial_score)
            super().__init__(patience, initial_state, initial_score)

    monkeypatch.setattr(training, "EarlyStopping", RecordingStopping)
    monkeypatch.setattr(pipeline, "finetune_encoder", real_finetune)
    with caplog.at_level(logging.INFO, logger="finetune.training"):
        assert main([*argv, "--resume"]) == 0
    # The probe's stopping (stage 1 runs again), then stage 2's, which the resume state sets.
    assert len(initial_scores) == 2 and initial_scores[1] == pytest.approx(expected, abs=1e-9)
    assert any("scored again by precision@1 + recall@5" in line for line in caplog.messages)
    assert not resume_path.exists()
