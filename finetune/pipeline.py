"""One fine-tuning run, from a data folder to a checkpoint directory with its metrics."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from finetune.calibration import (
    ENCODER_BLEND_WEIGHTS,
    HEAD_BLEND_WEIGHTS,
    blend_states,
    calibrate_thresholds,
    choose_blend,
)
from finetune.dataset import Dataset, Sample, frequent_hashtags
from finetune.embeddings import embed_images, file_digests
from finetune.metrics import SELECTION_METRIC, ranking_metrics, selection_score
from finetune.precision import EmbeddingPrecision
from finetune.publish import write_metrics
from finetune.split import Split, duplicate_groups, random_split
from finetune.training import (
    BiasFit,
    TrainOptions,
    encoder_scores,
    finetune_encoder,
    fit_biases,
    head_scores,
    train_linear_probe,
)
from inference.loading import load_zero_shot, save_checkpoint
from inference.model import HashtagModel
from inference.spec import default_cache_dir
from inference.zeroshot_cache import weights_identity

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"


@dataclass
class RunOptions:
    data: Path
    out: Path
    model: str
    pretrained: str
    device: torch.device
    train: TrainOptions
    vocabulary: list[str] | None = None  # None: the data's vocab_index.txt, else most frequent
    vocab_size: int = 1000
    test_size: float | None = None
    max_images: int | None = None
    unfreeze_blocks: int | None = 0  # None: all blocks
    resume: bool = False
    embedding_precision: str = "auto"  # stage 1's frozen-encoder pass: auto|fp32|bf16


def run(dataset: Dataset, options: RunOptions) -> dict:
    """Train, evaluate against the baselines, and write the checkpoint. Returns metrics.json."""
    train = options.train
    torch.manual_seed(train.seed)
    vocabulary = (
        options.vocabulary
        or dataset.vocabulary
        or frequent_hashtags(dataset.samples, options.vocab_size)
    )
    samples, digests, copies = _usable_samples(dataset, vocabulary, options)
    split = _load_or_make_split(samples, copies, options)

    model = load_zero_shot(options.model, options.pretrained, vocabulary).to(options.device)
    zero_shot_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    by_name = {sample.name: sample for sample in samples}
    digest_of = {sample.name: digest for sample, digest in zip(samples, digests, strict=True)}
    parts = {}
    for part in ("train", "val", "test"):
        names = getattr(split, part)
        parts[part] = _Part(
            paths=[by_name[name].path for name in names],
            truth=_multi_hot([by_name[name].hashtags for name in names], vocabulary),
            digests=[digest_of[name] for name in names],
        )
    cache_folder = default_cache_dir() / "embeddings" / _encoder_key(model, options.pretrained)
    # bf16 embeddings share the fp32 cache: they agree with fp32 to cosine >= 0.999 (checked on
    # this machine before bf16 is used), closer than the probe can tell apart.
    precision = EmbeddingPrecision(options.embedding_precision)
    for name, part in parts.items():
        embeddings, readable = embed_images(
            model,
            part.paths,
            batch_size=train.batch_size,
            workers=train.workers,
            cache_folder=cache_folder,
            description=f"embedding {name}",
            precision=precision,
            digests=part.digests,
        )
        part.keep_readable(embeddings, readable)

    train_part, val_part, test_part = parts["train"], parts["val"], parts["test"]
    metrics = {
        "popularity": ranking_metrics(
            np.broadcast_to(train_part.truth.sum(axis=0, dtype=np.float32), test_part.truth.shape),
            test_part.truth,
        ),
        "zero_shot": ranking_metrics(
            head_scores(model.head, test_part.embeddings), test_part.truth
        ),
    }

    # Stage 1: the linear probe, then its blend with the zero-shot head.
    probed = train_linear_probe(
        model.head,
        train_part.embeddings,
        train_part.truth,
        val_part.embeddings,
        val_part.truth,
        train,
    )
    head_weight, head_curve, blended = _choose_head_blend(model, probed, train_part, val_part)
    model.head.load_state_dict(blended)
    blend = {"stage": "head", "weight": head_weight, "validation_score": head_curve}

    if options.unfreeze_blocks != 0:
        blend, val_scores = _stage_two(model, zero_shot_state, parts, options)
        test_scores, _ = encoder_scores(model, test_part.paths, train, "testing")
    else:
        val_scores = head_scores(model.head, val_part.embeddings)
        test_scores = head_scores(model.head, test_part.embeddings)
    metrics["finetuned"] = ranking_metrics(test_scores, test_part.truth)

    thresholds = calibrate_thresholds(_sigmoid(val_scores), val_part.truth)
    report = {
        **metrics,
        "selection_metric": SELECTION_METRIC,
        "selection_score": blend["validation_score"][blend["weight"]],
        "wise_ft": blend,
        "images": {
            "listed": len(dataset.samples),
            "missing": dataset.missing,
            "without_vocabulary_tags": len(dataset.samples) - len(samples) - len(copies),
            "duplicates_removed": split.duplicates_removed,
            "unreadable": sum(part.unreadable for part in parts.values()),
            **{name: len(part.truth) for name, part in parts.items()},
        },
    }
    model.spec = replace(
        model.spec,
        thresholds=thresholds,
        provenance={
            "head": "fine-tuned",
            "pretrained": options.pretrained,
            "data": str(options.data),
            "seed": train.seed,
            "unfreeze_blocks": "all"
            if options.unfreeze_blocks is None
            else options.unfreeze_blocks,
            "loss": train.loss,
            "wise_ft_weight": blend["weight"],
            "test_metrics": metrics["finetuned"],
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )
    save_checkpoint(model.float().cpu(), options.out)
    write_metrics(options.out, report)
    (options.out / RESUME_FILE).unlink(missing_ok=True)  # the run is complete
    return report


@dataclass
class _Part:
    """The images of one split part, with their frozen-encoder embeddings."""

    paths: list[Path | None]
    truth: np.ndarray
    digests: list[str | None] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    unreadable: int = 0

    def keep_readable(self, embeddings: np.ndarray, readable: np.ndarray) -> None:
        """Drop the images that could not be decoded; they are counted in metrics.json."""
        self.paths = [path for path, ok in zip(self.paths, readable, strict=True) if ok]
        self.digests = [digest for digest, ok in zip(self.digests, readable, strict=True) if ok]
        self.truth, self.embeddings = self.truth[readable], embeddings[readable]
        self.unreadable = int((~readable).sum())


def _usable_samples(
    dataset: Dataset, vocabulary: list[str], options: RunOptions
) -> tuple[list[Sample], list[str | None], list[str]]:
    """Found images with at least one hashtag in the vocabulary, optionally a seeded subset,
    each file once: (samples, their files' digests, the names of the byte-identical copies
    left out). The first listed copy stands for all of them, with all their hashtags."""
    known = set(vocabulary)
    samples = [
        sample
        for sample in dataset.samples
        if sample.path is not None and any(tag in known for tag in sample.hashtags)
    ]
    if options.max_images and options.max_images < len(samples):
        chosen = np.random.default_rng(options.train.seed).choice(
            len(samples), options.max_images, replace=False
        )
        samples = [samples[i] for i in sorted(chosen)]
    digests = file_digests([sample.path for sample in samples])
    groups = duplicate_groups(digests)
    copies = [samples[i].name for group in groups for i in group[1:]]
    if copies:
        log.info("%d byte-identical copies of listed images left out", len(copies))
    digests = [digests[group[0]] for group in groups]
    samples = [_merged([samples[i] for i in group]) for group in groups]
    if len(samples) < 10:
        raise ValueError(
            f"only {len(samples)} images have a hashtag in the vocabulary; need at least 10"
        )
    return samples, digests, copies


def _merged(copies: list[Sample]) -> Sample:
    """The first of byte-identical copies, with the hashtags of them all."""
    hashtags = dict.fromkeys(tag for copy in copies for tag in copy.hashtags)
    return replace(copies[0], hashtags=tuple(hashtags))


def _load_or_make_split(samples: list[Sample], copies: list[str], options: RunOptions) -> Split:
    if options.resume and (options.out / "split.json").is_file():
        return _resumed_split(samples, copies, options)
    split = random_split([sample.name for sample in samples], options.test_size, options.train.seed)
    split = replace(split, duplicates_removed=len(copies))
    options.out.mkdir(parents=True, exist_ok=True)
    split.save(options.out)
    return split


def _resumed_split(samples: list[Sample], copies: list[str], options: RunOptions) -> Split:
    """The interrupted run's split. One written before copies were left out may list them:
    they are dropped from it now, the first copy kept, and the split written again."""
    split = Split.load(options.out)
    names = {sample.name for sample in samples}
    if set(split.train + split.val + split.test) - names - set(copies):
        raise ValueError(
            f"{options.out}/split.json names images this data does not have; "
            "resume with the same --data, --max-images and vocabulary, or drop --resume"
        )
    kept = replace(
        split,
        train=[name for name in split.train if name in names],
        val=[name for name in split.val if name in names],
        test=[name for name in split.test if name in names],
        duplicates_removed=len(copies),
    )
    if kept != split:
        kept.save(options.out)
    return kept


def _multi_hot(hashtag_lists, vocabulary: list[str]) -> np.ndarray:
    index = {tag: i for i, tag in enumerate(vocabulary)}
    truth = np.zeros((len(hashtag_lists), len(vocabulary)), dtype=np.float32)
    for row, hashtags in enumerate(hashtag_lists):
        for tag in hashtags:
            if tag in index:
                truth[row, index[tag]] = 1
    return truth


def _encoder_key(model: HashtagModel, pretrained: str) -> str:
    material = json.dumps(
        [model.spec.model_cfg, model.spec.preprocess, weights_identity(pretrained)], sort_keys=True
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _choose_head_blend(
    model: HashtagModel, probed: nn.Linear, train_part: _Part, val_part: _Part
) -> tuple[float, dict[float, float], dict]:
    """(weight, validation score of each weight, the chosen head's state). Each blend's
    biases are fitted again on the training embeddings: interpolated biases do not suit
    interpolated weights, and precision@1 and recall@5 depend on them."""
    zero_shot_head = model.head.state_dict()
    train_x = torch.from_numpy(train_part.embeddings)
    train_y = torch.from_numpy(train_part.truth)
    heads: dict[float, dict] = {}

    def validation_score(weight: float) -> float:
        head = nn.Linear(probed.in_features, probed.out_features)
        head.load_state_dict(blend_states(zero_shot_head, probed.state_dict(), weight))
        fit_biases(head, train_x, train_y)
        heads[weight] = head.state_dict()
        return selection_score(head_scores(head, val_part.embeddings), val_part.truth)

    weight, curve = choose_blend(validation_score, HEAD_BLEND_WEIGHTS)
    return weight, curve, heads[weight]


def _stage_two(
    model: HashtagModel, zero_shot_state: dict, parts: dict, options: RunOptions
) -> tuple[dict, np.ndarray]:
    """LP-FT, then the WiSE-FT blend; returns the blend report and its validation scores."""
    train, val = parts["train"], parts["val"]
    resume_path = options.out / RESUME_FILE
    resume_state = None
    if options.resume and resume_path.is_file():
        resume_state = torch.load(resume_path, map_location="cpu", weights_only=True)

    def save_progress(state: dict) -> None:
        partial = resume_path.with_suffix(".tmp")
        torch.save(state, partial)
        partial.replace(resume_path)

    bias_fit = BiasFit.sample(train.paths, train.truth, options.train.seed)
    finetune_encoder(
        model,
        train.paths,
        train.truth,
        val.paths,
        val.truth,
        options.unfreeze_blocks,
        options.train,
        save_progress=save_progress,
        resume_state=resume_state,
        bias_fit=bias_fit,
    )
    tuned_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    # Kept per weight: the blended model with its biases fitted (as each epoch's were), and its
    # validation scores, which feed the thresholds.
    states: dict[float, dict] = {}
    val_scores: dict[float, np.ndarray] = {}

    def validation_score(weight: float) -> float:
        model.load_state_dict(blend_states(zero_shot_state, tuned_state, weight))
        bias_fit.apply(model, options.train)
        states[weight] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        val_scores[weight], _ = encoder_scores(model, val.paths, options.train, "validating")
        return selection_score(val_scores[weight], val.truth)

    weight, curve = choose_blend(validation_score, ENCODER_BLEND_WEIGHTS)
    model.load_state_dict(states[weight])
    return {"stage": "encoder", "weight": weight, "validation_score": curve}, val_scores[weight]


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))
