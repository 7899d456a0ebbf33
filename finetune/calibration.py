"""After training: the WiSE-FT blend with the zero-shot model, and per-tag thresholds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

# The blend is chosen on validation. Cheap for a head (one matrix product per weight); for a
# tuned encoder every weight means embedding the validation images again, hence fewer.
HEAD_BLEND_WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2))
ENCODER_BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def blend_states(
    zero_shot: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT (Wortsman et al., 2022): interpolate the weights, (1-w)·zero-shot + w·fine-tuned.

    It costs nothing at inference and is reported to add 1-6 points, most on data unlike the
    training set, which is what photos sent to a chat bot are.
    """
    return {
        name: torch.lerp(zero_shot[name].float(), tensor.float(), weight).to(tensor.dtype)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in finetuned.items()
    }


def choose_blend(
    validation_score: Callable[[float], float], weights: Sequence[float]
) -> tuple[float, dict[float, float]]:
    """The weight with the best validation score (finetune.metrics.SELECTION_METRIC); ties go
    to the one nearer zero-shot."""
    scores = {float(weight): validation_score(float(weight)) for weight in weights}
    best = max(scores, key=lambda weight: (scores[weight], -weight))
    return best, scores


def calibrate_thresholds(scores: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per tag, the score threshold with the best F1 on validation.

    Tags with no positive validation image get the threshold that is best over all tags pooled.
    """
    truth = truth.astype(bool)
    pooled = _best_f1_threshold(scores.ravel(), truth.ravel())
    thresholds = []
    for tag in range(scores.shape[1]):
        positives = truth[:, tag]
        thresholds.append(
            _best_f1_threshold(scores[:, tag], positives) if positives.any() else pooled
        )
    return thresholds


def _best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], np.cumsum(positive[order])
    predicted = np.arange(1, len(scores) + 1)
    f1 = 2 * hits / (predicted + positive.sum())
    # Only cut between different scores: a threshold cannot split tied images.
    distinct = np.append(sorted_scores[1:] < sorted_scores[:-1], True)
    best = int(np.argmax(np.where(distinct, f1, -1)))
    return float(sorted_scores[best])
