"""The two training stages: a linear probe on cached embeddings, then optional LP-FT.

Both start from the zero-shot model, keep the epoch with the best validation mAP, and stop
early when validation mAP stops improving.
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
from finetune.metrics import mean_average_precision
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
    patience: int = 5  # epochs without a better validation mAP before stopping
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
    """Keeps the best state seen so far by validation mAP; says when patience runs out."""

    def __init__(self, patience: int, initial_state: dict, initial_map: float):
        self.patience, self.bad_epochs = patience, 0
        self.best_state, self.best_map = _cpu_copy(initial_state), initial_map

    def update(self, state: dict, val_map: float) -> bool:
        """Record one epoch; True when training should stop."""
        if val_map > self.best_map:
            self.best_state = _cpu_copy(state)
            self.best_map, self.bad_epochs = val_map, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


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
    standardised embeddings (see Standardization)."""
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
    stopping = EarlyStopping(options.patience, probe.state_dict(), _val_map(probe, val_z, val_y))
    for epoch in tqdm(range(options.epochs), desc="linear probe", unit="epoch"):
        for batch in torch.randperm(len(x), generator=generator).split(options.batch_size):
            loss = loss_fn(probe(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        val_map = _val_map(probe, val_z, val_y)
        log.info("linear probe epoch %d: val mAP %.4f", epoch + 1, val_map)
        if stopping.update(probe.state_dict(), val_map):
            break
    probe.load_state_dict(stopping.best_state)
    return standard.fold(probe)


def _val_map(head: nn.Linear, val_x: np.ndarray, val_y: np.ndarray) -> float:
    return mean_average_precision(head_scores(head, val_x), val_y)


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
) -> HashtagModel:
    """Stage 2 (LP-FT): tune the last vision blocks with the probed head, at a low LR.

    `save_progress` receives the full training state after each epoch (for --resume).
    """
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
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        schedule.load_state_dict(resume_state["schedule"])
        start_epoch = resume_state["epoch"]
        stopping = EarlyStopping(
            options.patience, resume_state["best_state"], resume_state["best_map"]
        )
        stopping.bad_epochs = resume_state["bad_epochs"]
        log.info("resuming encoder fine-tuning after epoch %d", start_epoch)
    else:
        stopping = EarlyStopping(
            options.patience,
            _cpu_copy(model.state_dict()),
            _encoder_val_map(model, val_paths, val_y, options),
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
        val_map = _encoder_val_map(model, val_paths, val_y, options)
        log.info("fine-tune epoch %d: val mAP %.4f", epoch + 1, val_map)
        stop = stopping.update(model.state_dict(), val_map)
        save_progress(
            {
                "epoch": epoch + 1,
                "model": _cpu_copy(model.state_dict()),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "best_state": stopping.best_state,
                "best_map": stopping.best_map,
                "bad_epochs": stopping.bad_epochs,
            }
        )
        if stop:
            break
    model.load_state_dict(stopping.best_state)
    return model.eval().requires_grad_(False)


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


def _encoder_val_map(model: HashtagModel, paths, val_y: np.ndarray, options: TrainOptions) -> float:
    scores, readable = encoder_scores(model, paths, options, "validating")
    return mean_average_precision(scores[readable], val_y[readable])


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
