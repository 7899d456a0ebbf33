"""The HARRISON paper's ranking metrics, plus mean average precision over tags, and the sum
of two of them that training selects by.

For each image with truth set T and the top-K predicted tags P_K (Park et al., 2016):
    precision@K = |P_K ∩ T| / K      recall@K = |P_K ∩ T| / |T|      accuracy@K = [P_K ∩ T ≠ ∅]
averaged over images, as fractions 0..1. Images whose truth set is empty are left out.
"""

from __future__ import annotations

import numpy as np

# The paper's best baseline (VGG-16 object + scene features), in percent, for comparison.
PAPER_VGG_OBJECT_SCENE = {"precision@1": 30.16, "recall@5": 21.38, "accuracy@5": 52.52}

# What a run keeps the best of, named as in metrics.json and the logs (see selection_score).
SELECTION_METRIC = "precision@1 + recall@5 on validation"


def top_k_hits(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per image, how many of the k best-scored tags are true. scores, truth: (images, tags).

    Ties at the k-th place go to the lower tag index, as a stable sort would order them; found
    with a partition instead of a full sort, which matters at 100,000 images x 1,000 tags.
    """
    k = min(k, scores.shape[1])
    kth_best = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    above = scores > kth_best
    tied = scores == kth_best
    places_left = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= places_left))
    return (chosen & truth.astype(bool)).sum(axis=1)


def ranking_metrics(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """precision@1, recall@5, accuracy@5 and mAP for (images, tags) score and 0/1 truth arrays."""
    scores, truth = _labelled(scores, truth)
    return {**_per_photo_metrics(scores, truth), "map": mean_average_precision(scores, truth)}


def selection_score(scores: np.ndarray, truth: np.ndarray) -> float:
    """precision@1 + recall@5: what training selects by (early stopping, the WiSE-FT blends).

    Both rank the hashtags within one photo, which is what the product shows, so unlike mAP
    (which ranks the photos within one hashtag) they see each hashtag's bias.
    """
    metrics = _per_photo_metrics(*_labelled(scores, truth))
    return metrics["precision@1"] + metrics["recall@5"]


def _labelled(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = truth.astype(bool)
    labelled = truth.any(axis=1)
    if not labelled.any():
        raise ValueError("no image has a tag in the vocabulary: nothing to evaluate")
    return scores[labelled], truth[labelled]


def _per_photo_metrics(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    hits_at_1 = top_k_hits(scores, truth, 1)
    hits_at_5 = top_k_hits(scores, truth, 5)
    return {
        "precision@1": float(hits_at_1.mean()),
        "recall@5": float((hits_at_5 / truth.sum(axis=1)).mean()),
        "accuracy@5": float((hits_at_5 > 0).mean()),
    }


def mean_average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean over tags (those with at least one positive image) of each tag's average precision.

    Average precision of a tag = the mean, over its positive images, of the precision among
    all images scored at least as high as that positive (ties count against it).
    """
    truth = truth.astype(bool)
    precisions = []
    for tag in np.flatnonzero(truth.any(axis=0)):
        precisions.append(_average_precision(scores[:, tag], truth[:, tag]))
    if not precisions:
        raise ValueError("no tag has a positive image: mAP is undefined")
    return float(np.mean(precisions))


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_positive = scores[order], positive[order]
    # With ties, every image in a tied group is ranked at the group's last position.
    last_of_group = np.searchsorted(-sorted_scores, -sorted_scores, side="right")
    positives_so_far = np.cumsum(sorted_positive)
    precision_at_rank = positives_so_far[last_of_group - 1] / last_of_group
    return float(precision_at_rank[sorted_positive].mean())
