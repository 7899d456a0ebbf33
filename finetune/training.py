"""The two training stages: a linear probe on cached embeddings, then optional LP-FT.

Both start from the zero-shot model, keep the epoch with the best validation precision@1 +
recall@5 (finetune.metrics.selection_score), and stop early when it stops improving. Both judge
each epoch with each hashtag's bias fitted exactly to the epoch's weights (fit_biases): the
probe on all training embeddings, before its first epoch and after each one; LP-FT on a sample
of training images embedded by the epoch's encoder (BiasFit).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from finetune.embeddings import ImageFiles, embed_images, image_loader
from finetune.losses import make_loss
from finetune.metrics import SELECTION_METRIC, selection_score
from inference.model import HashtagModel

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3  # the head (trained on standardised embeddings)
    encoder_lr: float = 1e-5  # LP-FT: the encoder moves far less than the head
    loss: str = "bce"
    seed: int = 0
    patience: int = 5  # epochs without a better validation score before stopping
    workers: int = 2


def head_scores(head: nn.Linear, embeddings: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        weight, bias = head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
        return torch.addmm(bias, torch.from_numpy(embeddings), weight.T).numpy()


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int = 0):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EarlyStopping:
    """Keeps the best state seen so far by validation score (SELECTION_METRIC); says when
    patience runs out."""

    def __init__(self, patience: int, initial_state: dict, initial_score: float):
        self.patience, self.bad_epochs = patience, 0
        self.best_state, self.best_score = _cpu_copy(initial_state), initial_score

    def update(self, state: dict, score: float) -> bool:
        """Record one epoch; True when training should stop."""
        if score > self.best_score:
            self.best_state = _cpu_copy(state)
            self.best_score, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


# fit_biases: the largest Newton step (in logits) while the optimum is not yet bracketed, and
# the weight of a Gaussian prior around the starting bias (in images' worth of loss: it only
# keeps a hashtag with no training positive from running off to minus infinity).
_MAX_BIAS_STEP, _BIAS_PRIOR = 4.0, 0.01


def fit_biases(
    head: nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    iterations: int = 30,
    tolerance: float = 1e-4,
) -> None:
    """Set each hashtag's bias to the one that minimises its logistic loss on (x, y), the
    weights held fixed: a 1-D convex problem per hashtag, solved by Newton's method.

    Gradient descent moves a bias by about its learning rate per step, so a head trained from
    the zero-shot one keeps biases that are off by a few logits: that leaves mAP untouched (it
    ranks photos within a hashtag) but not precision@1 or recall@5 (hashtags within a photo).
    Per hashtag j, with a_ij = w_j·x_i, p_ij = sigmoid(a_ij + b_j):
        gradient  sum_i (p_ij - y_ij) + prior (b_j - b0_j)
        hessian   sum_i p_ij (1 - p_ij) + prior.
    A step that would leave the interval known to hold the optimum (from the gradient's signs
    so far) bisects it instead, so every hashtag converges.
    """
    with torch.no_grad():
        weight = head.weight.detach().float().cpu()
        without_bias = (x.float() @ weight.T).split(8192)
        positives = y.float().sum(dim=0, dtype=torch.float64)
        start = head.bias.detach().cpu().double()
        bias = start.clone()
        low = torch.full_like(bias, -math.inf)
        high = torch.full_like(bias, math.inf)
        for _ in range(iterations):
            gradient = _BIAS_PRIOR * (bias - start) - positives
            hessian = torch.full_like(bias, _BIAS_PRIOR)
            shift = bias.float()
            for chunk in without_bias:
                p = torch.sigmoid(chunk + shift)
                gradient += p.sum(dim=0, dtype=torch.float64)
                hessian += (p * (1 - p)).sum(dim=0, dtype=torch.float64)
            low = torch.where(gradient < 0, bias, low)
            high = torch.where(gradient > 0, bias, high)
            proposal = bias - (gradient / hessian).clamp(-_MAX_BIAS_STEP, _MAX_BIAS_STEP)
            outside = (proposal <= low) | (proposal >= high)
            proposal = torch.where(outside, (low + high) / 2, proposal)
            step, bias = (proposal - bias).abs().max(), proposal
            if step < tolerance:
                break
        head.bias.copy_(bias.to(head.bias.dtype))


@dataclass
class Standardization:
    """Per-dimension standardisation of embeddings, for training a head on them.

    CLIP embeddings share a large common direction, so their per-dimension spread is small and
    uneven: plain gradient steps on a head crawl. Training on standardised features and folding
    the standardisation back into the head afterwards is exact:
    V·(e - mean)/std + c  =  (V/std)·e + (c - V·mean/std).
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, embeddings: np.ndarray) -> Standardization:
        return cls(
            torch.from_numpy(embeddings.mean(axis=0)),
            torch.from_numpy(embeddings.std(axis=0)).clamp(min=1e-6),
        )

    def apply(self, embeddings: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(embeddings) - self.mean) / self.std

    def head_in_standard_terms(self, head: nn.Linear) -> nn.Linear:
        """The same function as `head`, taking standardised embeddings."""
        standard = nn.Linear(head.in_features, head.out_features)
        weight, bias = head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
        with torch.no_grad():
            standard.weight.copy_(weight * self.std)
            standard.bias.copy_(bias + weight @ self.mean)
        return standard

    def fold(self, standard: nn.Linear) -> nn.Linear:
        """Back to a head on raw embeddings."""
        folded = nn.Linear(standard.in_features, standard.out_features)
        with torch.no_grad():
            folded.weight.copy_(standard.weight / self.std)
            folded.bias.copy_(standard.bias - (standard.weight / self.std) @ self.mean)
        return folded.requires_grad_(False)


def train_linear_probe(
    head: nn.Linear,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    options: TrainOptions,
) -> nn.Linear:
    """Stage 1: train only the head on frozen-encoder embeddings (seconds, not hours), on
    standardised embeddings (see Standardization). Each hashtag's bias is fitted exactly
    (fit_biases) before the first epoch and after each one, so every epoch is judged, and
    continued from, with the best biases for its weights."""
    standard = Standardization.of(train_x)
    probe = standard.head_in_standard_terms(head)
    x = standard.apply(train_x)
    val_z = standard.apply(val_x).numpy()
    y = torch.from_numpy(train_y)

    generator = torch.Generator().manual_seed(options.seed)
    steps_per_epoch = math.ceil(len(x) / options.batch_size)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = cosine_schedule(optimizer, options.epochs * steps_per_epoch)
    loss_fn = make_loss(options.loss)
    fit_biases(probe, x, y)
    stopping = EarlyStopping(options.patience, probe.state_dict(), _val_score(probe, val_z, val_y))
    for epoch in tqdm(range(options.epochs), desc="linear probe", unit="epoch"):
        for batch in torch.randperm(len(x), generator=generator).split(options.batch_size):
            loss = loss_fn(probe(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        fit_biases(probe, x, y)
        score = _val_score(probe, val_z, val_y)
        log.info("linear probe epoch %d: %s %.4f", epoch + 1, SELECTION_METRIC, score)
        if stopping.update(probe.state_dict(), score):
            break
    probe.load_state_dict(stopping.best_state)
    return standard.fold(probe)


def _val_score(head: nn.Linear, val_x: np.ndarray, val_y: np.ndarray) -> float:
    return selection_score(head_scores(head, val_x), val_y)


def unlock_last_blocks(model: HashtagModel, blocks: int | None) -> None:
    """Make the last `blocks` transformer blocks (None: all) and the head trainable."""
    model.requires_grad_(False)
    if blocks is None:
        model.visual.requires_grad_(True)
    elif blocks > 0:
        # open_clip's own grouping: each block is a group, plus the final projection's group.
        model.visual.lock(unlocked_groups=blocks + 1)
    model.head.requires_grad_(True)


def finetune_encoder(
    model: HashtagModel,
    train_paths: list[Path | None],
    train_y: np.ndarray,
    val_paths: list[Path | None],
    val_y: np.ndarray,
    unfreeze_blocks: int | None,
    options: TrainOptions,
    save_progress: Callable[[dict], None],
    resume_state: dict | None = None,
    bias_fit: BiasFit | None = None,
) -> HashtagModel:
    """Stage 2 (LP-FT): tune the last vision blocks with the probed head, at a low LR.

    Each epoch is judged, and kept, with its head's biases fitted to its encoder (`bias_fit`,
    by default BiasFit.sample of the training images); training goes on from the biases it
    learned itself, since fitting them during training slowed the encoder's learning in tests.
    `save_progress` receives the full training state after each epoch (for --resume).
    """
    bias_fit = bias_fit or BiasFit.sample(train_paths, train_y, options.seed)
    device = next(model.parameters()).device
    unlock_last_blocks(model, unfreeze_blocks)
    encoder_params = [p for p in model.visual.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": options.encoder_lr},
            {"params": model.head.parameters(), "lr": options.lr / 10},
        ],
        weight_decay=0.05,
    )
    files = ImageFiles(
        train_paths, model.spec.image_transform(training=True), model.spec.input_side
    )
    steps_per_epoch = math.ceil(len(files) / options.batch_size)
    schedule = cosine_schedule(
        optimizer, options.epochs * steps_per_epoch, warmup=steps_per_epoch // 2
    )
    loss_fn = make_loss(options.loss)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    labels = torch.from_numpy(train_y)

    start_epoch = 0
    if resume_state:
        best_score = _resumed_best_score(model, resume_state, val_paths, val_y, options)
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        schedule.load_state_dict(resume_state["schedule"])
        start_epoch = resume_state["epoch"]
        stopping = EarlyStopping(options.patience, resume_state["best_state"], best_score)
        stopping.bad_epochs = resume_state["bad_epochs"]
        log.info("resuming encoder fine-tuning after epoch %d", start_epoch)
    else:
        stopping = EarlyStopping(
            options.patience,
            _cpu_copy(model.state_dict()),
            _encoder_val_score(model, val_paths, val_y, options),
        )
    for epoch in range(start_epoch, options.epochs):
        model.train()
        loader = image_loader(
            files, options.batch_size, options.workers, shuffle=True, seed=options.seed + epoch
        )
        for indices, pixels in tqdm(loader, desc=f"fine-tune epoch {epoch + 1}", unit="batch"):
            if pixels is None:
                continue
            with autocast:
                logits, _ = model(pixels.to(device))
            loss = loss_fn(logits, labels[indices].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        trained_bias = model.head.bias.detach().clone()
        bias_fit.apply(model, options)
        score = _encoder_val_score(model, val_paths, val_y, options)
        log.info("fine-tune epoch %d: %s %.4f", epoch + 1, SELECTION_METRIC, score)
        stop = stopping.update(model.state_dict(), score)
        with torch.no_grad():  # training goes on from its own biases
            model.head.bias.copy_(trained_bias)
        save_progress(
            {
                "epoch": epoch + 1,
                "model": _cpu_copy(model.state_dict()),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "best_state": stopping.best_state,
                "selection_metric": SELECTION_METRIC,
                "best_score": stopping.best_score,
                "bad_epochs": stopping.bad_epochs,
            }
        )
        if stop:
            break
    model.load_state_dict(stopping.best_state)
    return model.eval().requires_grad_(False)


# How many training images stage 2 fits its head's biases on, after each epoch: as many as
# HARRISON's test part, so that it costs about as much as validating.
BIAS_FIT_IMAGES = 5_000


@dataclass
class BiasFit:
    """Training images that stage 2 fits the head's biases on, embedded by the encoder of the
    moment without augmentation: a fixed seeded sample of BIAS_FIT_IMAGES at most."""

    paths: list[Path | None]
    truth: np.ndarray

    @classmethod
    def sample(cls, paths: list[Path | None], truth: np.ndarray, seed: int) -> BiasFit:
        count = min(len(paths), BIAS_FIT_IMAGES)
        chosen = np.sort(np.random.default_rng(seed).choice(len(paths), count, replace=False))
        return cls([paths[i] for i in chosen], truth[chosen])

    def apply(self, model: HashtagModel, options: TrainOptions) -> None:
        """Fit `model.head`'s biases (fit_biases) to its current encoder."""
        model.eval()
        embeddings, readable = embed_images(
            model,
            self.paths,
            batch_size=options.batch_size,
            workers=options.workers,
            description="fitting biases",
        )
        if readable.any():
            x, y = torch.from_numpy(embeddings[readable]), torch.from_numpy(self.truth[readable])
            fit_biases(model.head, x, y)


def encoder_scores(
    model: HashtagModel, paths, options: TrainOptions, description: str = "scoring"
) -> tuple[np.ndarray, np.ndarray]:
    """(head logits, readable) for images, embedded by the model's current encoder."""
    model.eval()
    embeddings, readable = embed_images(
        model,
        paths,
        batch_size=options.batch_size,
        workers=options.workers,
        description=description,
    )
    return head_scores(model.head, embeddings), readable


def _encoder_val_score(
    model: HashtagModel, paths, val_y: np.ndarray, options: TrainOptions
) -> float:
    scores, readable = encoder_scores(model, paths, options, "validating")
    return selection_score(scores[readable], val_y[readable])


def _resumed_best_score(
    model: HashtagModel, resume_state: dict, val_paths, val_y: np.ndarray, options: TrainOptions
) -> float:
    """The resumed run's best validation score. A state saved by an older version holds its
    best epoch's mAP as `best_map` instead: that epoch is scored again, by SELECTION_METRIC,
    so that the epochs still to come are compared with it on the same scale."""
    saved_by = resume_state.get("selection_metric", "validation mAP")
    if saved_by == SELECTION_METRIC:
        return resume_state["best_score"]
    model.load_state_dict(resume_state["best_state"])
    score = _encoder_val_score(model, val_paths, val_y, options)
    log.info(
        "the resumed state kept its best epoch by %s; scored again by %s: %.4f",
        saved_by,
        SELECTION_METRIC,
        score,
    )
    return score


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
