"""Multi-label losses: BCE with logits (default) and the asymmetric loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSS_CHOICES = ("bce", "asl")


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al., ICCV 2021) for many labels with few positives each.

    Easy negatives, which dominate a 997-tag vocabulary, are down-weighted by (p)^gamma_neg and
    shifted by `clip`, so the rare positives are not drowned out. Hashtag labels are also
    missing-not-negative (people skip fitting tags), which this forgives more than BCE does.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`weights`: optional per-cell weights (learning from feedback: how sure each label is)."""
        p = torch.sigmoid(logits.float())
        p_neg = (p - self.clip).clamp(min=0) if self.clip else p
        eps = 1e-8
        loss_pos = targets * (1 - p) ** self.gamma_pos * torch.log(p.clamp(min=eps))
        loss_neg = (1 - targets) * p_neg**self.gamma_neg * torch.log((1 - p_neg).clamp(min=eps))
        loss = loss_pos + loss_neg
        if weights is not None:
            loss = loss * weights
        return -loss.sum() / logits.shape[0]


def make_loss(name: str) -> nn.Module:
    if name == "asl":
        return AsymmetricLoss()
    return BCEWithLogits()


class BCEWithLogits(nn.Module):
    """Summed over tags, averaged over images: the same scale as AsymmetricLoss."""

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(
            logits.float(), targets, weight=weights, reduction="sum"
        )
        return loss / logits.shape[0]
