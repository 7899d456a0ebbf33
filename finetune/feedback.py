"""Learning from everyone's answers: re-fit the hashtag head on the suggestions people answered.

Every suggestion the bot stored carries the photo's embedding, the hashtags it showed, and what
the person said. That is a labelled data set in exactly the domain the bot serves:

- accepted (reaction, button, typed, caption): a positive;
- rejected: a negative;
- shown but neither, on a photo that got an answer: a weak negative (`shown_weight`);
- neither shown nor named: a faint negative (`unlabelled_weight`), mostly so that the rows of
  community hashtags learn where they do *not* fit.

Photos nobody answered are not used, nor embeddings made by another encoder.

A hashtag outside the vocabulary becomes a new row (a *community hashtag*) only when at least
`min_people` different people accepted or typed it; anything rarer stays in its authors' own
histories, so a name or a private joke is never suggested to strangers. Everything is read from
the database at the time of the re-fit, so a person who used /forget is in none of it.

The answers are split by time: the newest `holdout` share is the gate, the newest share of the
rest chooses how far to move, the rest trains. Training starts from the current head and mostly
recalibrates it (a scale and a bias per hashtag move fast, directions slowly: see
_Recalibration); how far to move is a WiSE-style blend between the current head and the
re-fitted one, chosen on the validation answers, so a few dozen answers nudge the head and
thousands may move it far.

The gate keeps the new head only when, on the newest answers, it is not worse than the current
one: its loss (how well it explains every answer, shown or typed) is not higher, and its
precision@1 + recall@5 against what people accepted is not clearly lower (beyond two standard
errors). Ranking metrics alone would favour the current head, because people mostly accept
what it showed them: a head that finds the hashtags it missed is credited only when someone
typed them.
"""

from __future__ import annotations

import datetime
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bot.store import AnsweredPhoto
from finetune.calibration import HEAD_BLEND_WEIGHTS, blend_states, calibrate_thresholds
from finetune.losses import make_loss
from finetune.metrics import ranking_metrics, top_k_hits
from finetune.training import Standardization, cosine_schedule, head_scores
from inference.model import HashtagModel

# Label codes of one (photo, hashtag) cell.
UNLABELLED, SHOWN, REJECTED, ACCEPTED = 0, 1, 2, 3
# The current head's logit for a community hashtag, which it cannot suggest.
CANNOT_SUGGEST = -30.0


class NotEnoughAnswers(ValueError):
    """Too few answered photos to learn from and to check the result."""


@dataclass
class FeedbackOptions:
    min_people: int = 5  # different people before an unknown hashtag is shared
    shown_weight: float = 0.5  # a shown hashtag nobody accepted or rejected
    unlabelled_weight: float = 0.05  # a hashtag neither shown nor named
    holdout: float = 0.2  # newest share of answers for the gate (as much again for the blend)
    min_answers: int = 20
    epochs: int = 5
    min_steps: int = 1000  # small data sets still get this many gradient steps
    batch_size: int = 512
    # Adam moves each weight by about `lr` a step: a zero-shot head's logits differ by several
    # units between hashtags, so a few hundred steps must be able to move a bias that far.
    lr: float = 2e-2
    direction_lr_scale: float = 0.1  # rows change direction this much slower (_Recalibration)
    loss: str = "bce"
    seed: int = 0


@dataclass
class RefitResult:
    model: HashtagModel  # the re-fitted model: same encoder, new head and vocabulary
    passed: bool  # not worse than the current head on the newest answers
    report: dict = field(default_factory=dict)  # what metrics.json holds


@dataclass
class _Labels:
    """The answers as (photos, candidate hashtags) label codes, with their embeddings."""

    embeddings: np.ndarray  # (photos, dim) float32
    codes: np.ndarray  # (photos, tags) uint8, UNLABELLED..ACCEPTED

    def part(self, rows: slice) -> _Labels:
        return _Labels(self.embeddings[rows], self.codes[rows])

    @property
    def truth(self) -> np.ndarray:
        return (self.codes == ACCEPTED).astype(np.float32)

    def __len__(self) -> int:
        return len(self.codes)


def community_hashtags(photos: list[AnsweredPhoto], vocabulary: list[str], min_people: int):
    """Hashtags outside the vocabulary that at least `min_people` different people accepted,
    most used first (ties by name, so the order never depends on hashing)."""
    known = set(vocabulary)
    people: dict[str, set[int]] = defaultdict(set)
    for photo in photos:
        for tag, verdict in photo.verdicts.items():
            if verdict > 0 and tag not in known:
                people[tag].add(photo.user_id)
    shared = [tag for tag, users in people.items() if len(users) >= min_people]
    return sorted(shared, key=lambda tag: (-len(people[tag]), tag))


def label_codes(photos: list[AnsweredPhoto], candidates: list[str]) -> np.ndarray:
    column = {tag: i for i, tag in enumerate(candidates)}
    codes = np.zeros((len(photos), len(candidates)), dtype=np.uint8)
    for row, photo in enumerate(photos):
        for tag in photo.shown:
            if tag in column:
                codes[row, column[tag]] = SHOWN
        for tag, verdict in photo.verdicts.items():
            if tag in column:  # private hashtags (too few people) never reach the shared head
                codes[row, column[tag]] = ACCEPTED if verdict > 0 else REJECTED
    return codes


def refit_head(
    model: HashtagModel,
    photos: list[AnsweredPhoto],
    options: FeedbackOptions,
    started_from: str,
    device: torch.device | None = None,
    skipped: int = 0,
) -> RefitResult:
    """Re-fit `model`'s head on answered photos (oldest first) and judge it on the newest.

    `model` is not changed; the result shares its vision tower. `started_from` is the version
    of the head served now; `skipped` (answers made with another encoder) is only reported.
    """
    if len(photos) < options.min_answers:
        raise NotEnoughAnswers(
            f"{len(photos)} answered photos made with this encoder; at least "
            f"{options.min_answers} are needed to learn from them and check the result"
        )
    device = device or torch.device("cpu")
    torch.manual_seed(options.seed)
    vocabulary = list(model.spec.vocabulary)
    community = community_hashtags(photos, vocabulary, options.min_people)
    candidates = vocabulary + community
    labels = _Labels(
        np.stack([photo.embedding for photo in photos]).astype(np.float32),
        label_codes(photos, candidates),
    )
    gate_size = max(1, round(len(labels) * options.holdout))
    val_size = max(1, round((len(labels) - gate_size) * options.holdout))
    train_end = len(labels) - gate_size - val_size
    train, val = labels.part(slice(0, train_end)), labels.part(slice(train_end, -gate_size))
    gate = labels.part(slice(-gate_size, None))

    start = _extended_head(model.head, train, len(community))
    fitted = _fit(start, train, options, device)
    weight, curve = _choose_blend(start, fitted, val, options)
    head = nn.Linear(start.in_features, start.out_features).requires_grad_(False)
    head.load_state_dict(blend_states(start.state_dict(), fitted.state_dict(), weight))

    # The current head cannot suggest a community hashtag at all.
    current_scores = np.full((len(gate), len(candidates)), CANNOT_SUGGEST, dtype=np.float32)
    current_scores[:, : len(vocabulary)] = head_scores(model.head, gate.embeddings)
    refitted_scores = head_scores(head, gate.embeddings)
    gate_metrics = {
        "current": _metrics(current_scores, gate.truth),
        "refitted": _metrics(refitted_scores, gate.truth),
    }
    losses = {
        "current": answer_loss(current_scores, gate, options),
        "refitted": answer_loss(refitted_scores, gate, options),
    }
    shortfall = ranking_shortfall(current_scores, refitted_scores, gate.truth)
    passed = losses["refitted"] <= losses["current"] and shortfall <= 0
    report = {
        "held_out": gate_metrics,
        "held_out_loss": losses,
        "ranking_shortfall": shortfall,
        "passed": passed,
        "blend": {"weight": weight, "validation_loss": curve},
        "answers": {
            "used": len(labels),
            "train": len(train),
            "validation": len(val),
            "held_out": len(gate),
            "skipped_other_encoder": skipped,
            "people": len({photo.user_id for photo in photos}),
        },
        "community_hashtags": community,
    }
    spec = replace(
        model.spec,
        vocabulary=candidates,
        thresholds=_thresholds(head, val, model.spec.thresholds),
        provenance={
            "head": "feedback",
            "started_from": started_from,
            # The model the operator chose, before any learning: a learned head is only
            # served on top of the same base (see bot.cli._served_checkpoint).
            "base": model.spec.provenance.get("base", started_from),
            "pretrained": model.spec.provenance.get("pretrained"),
            "answers": report["answers"],
            "community_hashtags": community,
            "blend_weight": weight,
            "held_out_metrics": gate_metrics,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )
    return RefitResult(HashtagModel(model.visual, head, spec), passed, report)


def _extended_head(head: nn.Linear, train: _Labels, new_rows: int) -> nn.Linear:
    """The current head, with a row per community hashtag: the direction from the average
    photo to the average photo that got it, as long as a typical row, at its base rate."""
    weight = head.weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu()
    extended = nn.Linear(head.in_features, head.out_features + new_rows)
    with torch.no_grad():
        extended.weight[: head.out_features] = weight
        extended.bias[: head.out_features] = bias
        if not new_rows:
            return extended.requires_grad_(False)
        x = torch.from_numpy(train.embeddings)
        truth = torch.from_numpy(train.truth[:, head.out_features :])
        average = x.mean(dim=0)
        for row in range(new_rows):
            positives = truth[:, row] > 0
            centre = x[positives].mean(dim=0) if positives.any() else average
            direction = centre - average
            direction *= weight.norm(dim=1).median() / direction.norm().clamp(min=1e-6)
            rate = min(max(float(positives.float().mean()), 1e-3), 0.5)
            extended.weight[head.out_features + row] = direction
            extended.bias[head.out_features + row] = (
                math.log(rate / (1 - rate)) - direction @ average
            )
    return extended.requires_grad_(False)


class _Recalibration(nn.Module):
    """The head being re-fitted: per hashtag, a scale and a bias that move fast, and a change
    of direction that moves slowly.

    A zero-shot head's rows point the right way but are badly scaled and offset (some hashtags'
    texts sit near every photo); a few hundred answers are enough to fix the scale and offset
    of each row, far too few to learn 512 new numbers per row.
    """

    def __init__(self, start: nn.Linear):
        super().__init__()
        self.register_buffer("start", start.weight.detach().clone())
        self.log_scale = nn.Parameter(torch.zeros(start.out_features))
        self.change = nn.Parameter(torch.zeros_like(start.weight))
        self.bias = nn.Parameter(start.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        return self.start * self.log_scale.exp()[:, None] + self.change

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight(), self.bias)

    def as_linear(self) -> nn.Linear:
        linear = nn.Linear(self.start.shape[1], self.start.shape[0])
        with torch.no_grad():
            linear.weight.copy_(self.weight())
            linear.bias.copy_(self.bias)
        return linear


def _fit(start: nn.Linear, train: _Labels, options: FeedbackOptions, device) -> nn.Linear:
    """The loss of stage 1, weighted by how sure each label is, from the current head."""
    if len(train) == 0:
        return start
    standard = Standardization.of(train.embeddings)
    head = _Recalibration(standard.head_in_standard_terms(start)).to(device)
    x = standard.apply(train.embeddings).to(device)
    codes = torch.from_numpy(train.codes).to(device)
    cell_weight = torch.tensor(
        [options.unlabelled_weight, options.shown_weight, 1.0, 1.0], device=device
    )
    steps_per_epoch = math.ceil(len(x) / options.batch_size)
    epochs = max(options.epochs, math.ceil(options.min_steps / steps_per_epoch))
    # The change of direction is measured against the size of the rows' entries.
    direction_lr = options.lr * options.direction_lr_scale * float(head.start.abs().mean())
    optimizer = torch.optim.AdamW(
        [
            {"params": [head.log_scale, head.bias], "lr": options.lr},
            {"params": [head.change], "lr": direction_lr},
        ],
        weight_decay=0.0,
    )
    schedule = cosine_schedule(optimizer, epochs * steps_per_epoch)
    loss_fn = make_loss(options.loss)
    generator = torch.Generator().manual_seed(options.seed)
    for _ in tqdm(range(epochs), desc="re-fitting the head", unit="epoch", leave=False):
        for batch in torch.randperm(len(x), generator=generator).split(options.batch_size):
            batch = batch.to(device)
            batch_codes = codes[batch].long()
            loss = loss_fn(
                head(x[batch]), (batch_codes == ACCEPTED).float(), cell_weight[batch_codes]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return standard.fold(head.cpu().as_linear())


def _choose_blend(start: nn.Linear, fitted: nn.Linear, val: _Labels, options: FeedbackOptions):
    """The blend weight whose head explains the validation answers best (lowest loss); ties go
    to the one nearer the current head."""
    curve = {}
    for weight in map(float, HEAD_BLEND_WEIGHTS):
        head = nn.Linear(start.in_features, start.out_features)
        head.load_state_dict(blend_states(start.state_dict(), fitted.state_dict(), weight))
        curve[weight] = answer_loss(head_scores(head, val.embeddings), val, options)
    best = min(curve, key=lambda weight: (curve[weight], weight))
    return best, curve


def answer_loss(logits: np.ndarray, part: _Labels, options: FeedbackOptions) -> float:
    """The training loss on answers the head never saw: how well it explains what people said,
    each answer on its own.

    Ranking metrics against accepted hashtags favour the head that chose what was shown, since
    people mostly accept what they are shown; the loss scores every answer, shown or typed.
    """
    codes = torch.from_numpy(part.codes).long()
    cell_weight = torch.tensor([options.unlabelled_weight, options.shown_weight, 1.0, 1.0])
    loss = make_loss(options.loss)(
        torch.from_numpy(logits).float(), (codes == ACCEPTED).float(), cell_weight[codes]
    )
    return float(loss)


def ranking_shortfall(current: np.ndarray, refitted: np.ndarray, truth: np.ndarray) -> float:
    """How far the re-fitted head's precision@1 + recall@5 falls below the current head's on
    the same photos, beyond two standard errors of the paired difference; <= 0 when it is not
    clearly worse. (A handful of answers cannot tell small differences apart.)"""
    labelled = truth.any(axis=1)
    if not labelled.any():
        return 0.0
    truth = truth[labelled].astype(bool)

    def per_photo(scores: np.ndarray) -> np.ndarray:
        scores = scores[labelled]
        return top_k_hits(scores, truth, 1) + top_k_hits(scores, truth, 5) / truth.sum(axis=1)

    difference = per_photo(refitted) - per_photo(current)
    error = difference.std(ddof=1) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return float(-difference.mean() - 2 * error)


def _metrics(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The paper's table; a part where nobody accepted anything scores 0, not an error."""
    if not truth.any():
        return {"precision@1": 0.0, "recall@5": 0.0, "accuracy@5": 0.0, "map": 0.0}
    return ranking_metrics(scores, truth)


def _thresholds(head: nn.Linear, val: _Labels, previous: list[float] | None) -> list[float]:
    """Calibrated again on the validation answers; hashtags nobody accepted there keep their
    previous threshold when they had one."""
    scores = torch.sigmoid(torch.from_numpy(head_scores(head, val.embeddings))).numpy()
    fresh = calibrate_thresholds(scores, val.truth) if val.truth.any() else None
    has_positive = val.truth.any(axis=0)
    thresholds = []
    for tag in range(head.out_features):
        if fresh is not None and has_positive[tag]:
            thresholds.append(fresh[tag])
        elif previous is not None and tag < len(previous):
            thresholds.append(previous[tag])
        else:
            thresholds.append(fresh[tag] if fresh is not None else 0.5)
    return thresholds
