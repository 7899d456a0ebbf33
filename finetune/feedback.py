"""Learning from everyone's answers: re-fit the hashtag head on the suggestions people answered.

Every suggestion the bot stored carries the photo's embedding, the hashtags it showed, and what
the person said. That is a labelled data set in exactly the domain the bot serves:

- accepted (reaction, button, typed, caption): a positive;
- rejected: a negative;
- shown but neither, on a photo that got an answer: a weak negative (`shown_weight`);
- neither shown nor named: a faint negative (`unlabelled_weight`), mostly so that the rows of
  community hashtags learn where they do *not* fit.

Who counts, what is shared and which answers judge are decided in finetune/answers.py.

**Every round starts from the base model** (the one the operator's options name), never from
the head the previous round learned, so nothing a round learned outlives the answers it was
learned from: after a /forget, the next round is what it would have been had that person never
existed.

The fit, on the training answers:
1. the base head's logits are recalibrated as a whole (one scale and one shift: a zero-shot
   head's logits are on no particular scale) and the hashtags' popularity prior gets the alpha
   these people's answers call for (inference/prior.py), which is all a hashtag gets until
   enough people accepted it; three numbers everyone shares, so only the answers of counted
   people set them, and only once there are `min_people` of them;
2. every hashtag that enough people accepted gets its own row, a logistic regression on the
   embeddings with a Gaussian prior around its recalibrated base row (one unit of standardised
   weight), so its direction moves as far as its answers warrant: a little with a few dozen,
   as far as a plain logistic regression with thousands; community hashtags start from the
   direction between the average photo and theirs;
3. how far the result moves from the recalibrated base is a WiSE-style blend chosen on the
   validation answers; the rows are then fitted again on the training and validation answers
   together, so nothing but the gate's answers is left unused.

The gate keeps the new head only when, on the answers it never saw, it is not worse than the
head being served: its loss (how well it explains every answer, shown or typed) is not higher,
and its precision@1 + recall@5 against what people accepted is not clearly lower (beyond two
standard errors), each person weighing as in training. Ranking metrics alone would favour the
served head, because people mostly accept what it showed them.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bot.store.records import AnsweredPhoto
from finetune.answers import (
    ACCEPTED,
    GATE,
    TRAIN,
    VALIDATION,
    AnswerSet,
    answer_set,
    community_hashtags,
    established_people,
    in_content_order,
    people_per_hashtag,
    split_of,
)
from finetune.calibration import HEAD_BLEND_WEIGHTS, blend_states, calibrate_thresholds
from finetune.losses import make_loss
from finetune.metrics import ranking_metrics, top_k_hits
from finetune.training import Standardization, cosine_schedule, head_scores
from inference.model import HashtagModel
from inference.prior import centred_log_prior

# The served head's logit for a hashtag it does not have, which it cannot suggest.
CANNOT_SUGGEST = -30.0
RECALIBRATION_PHOTOS = 5000


class NotEnoughAnswers(ValueError):
    """Too few answered photos to learn from and to check the result."""


@dataclass
class FeedbackOptions:
    min_people: int = 5  # different established people before a hashtag's row learns or is shared
    min_days: int = 2  # days (UTC) with answers before a person counts towards min_people
    person_cap: float = 50.0  # a person's answers weigh at most as much as this many photos
    shown_weight: float = 0.5  # a shown hashtag nobody accepted or rejected
    unlabelled_weight: float = 0.05  # a hashtag neither shown nor named
    holdout: float = 0.2  # share of answers for the gate (as much again for the blend)
    min_answers: int = 20
    epochs: int = 5
    min_steps: int = 1000  # small data sets still get this many gradient steps
    batch_size: int = 512
    lr: float = 2e-2  # Adam, on standardised embeddings
    prior_strength: float = 1.0  # the Gaussian prior around the base rows (see module doc)
    loss: str = "bce"
    seed: int = 0
    blocked: frozenset[str] = frozenset()  # never a community hashtag


@dataclass
class RefitResult:
    model: HashtagModel  # the re-fitted model: same encoder, new head and vocabulary
    passed: bool  # not worse than the served head on the answers it never saw
    report: dict = field(default_factory=dict)  # what metrics.json holds
    learned_from: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def refit_head(
    base: HashtagModel,
    photos: list[AnsweredPhoto],
    options: FeedbackOptions,
    base_version: str,
    current: HashtagModel | None = None,
    started_from: str | None = None,
    *,
    device: torch.device | None = None,
    skipped: int = 0,
    damaged: int = 0,
) -> RefitResult:
    """Re-fit a head on top of `base` (whose version is `base_version`) from `photos`, and
    judge it against `current`, the head served now (version `started_from`; both default to
    the base). Neither model is changed; the result shares their encoder.

    `skipped` (answers made with another encoder) and `damaged` (rows that could not be read)
    are only reported.
    """
    if len(photos) < options.min_answers:
        raise NotEnoughAnswers(
            f"{len(photos)} answered photos made with this encoder; at least "
            f"{options.min_answers} are needed to learn from them and check the result"
        )
    device = device or torch.device("cpu")
    current = current or base
    started_from = started_from or base_version
    torch.manual_seed(options.seed)
    photos = in_content_order(photos)
    split = split_of(photos, options.holdout, options.seed)
    training_photos = [photo for photo, part in zip(photos, split, strict=True) if part == TRAIN]
    counted = established_people(photos, options.min_days)  # known for a while: all answers
    people = people_per_hashtag(training_photos, counted)
    vocabulary = list(base.spec.vocabulary)
    community = community_hashtags(people, vocabulary, options.min_people, options.blocked)
    candidates = vocabulary + community
    learnable = np.array(
        [len(people.get(tag, ())) >= options.min_people for tag in candidates], dtype=bool
    )
    answers = answer_set(photos, candidates, options.person_cap)
    train, val, gate = (answers.part(split == part) for part in (TRAIN, VALIDATION, GATE))
    if not len(train) or not len(gate):
        raise NotEnoughAnswers(
            f"{len(photos)} answered photos leave none to train on or none to check with"
        )

    # Three numbers everyone's suggestions share: only a crowd of counted people sets them.
    crowd = train.part(np.isin(train.people, sorted(counted)))
    crowd = crowd if len(set(crowd.people.tolist())) >= options.min_people else None
    start, recalibration = _start_head(base, train, crowd, len(community), options)
    fitted = _fit(start, train, learnable, options, device)
    weight, curve = _choose_blend(start, fitted, val if len(val) else train, options)
    if weight > 0 and len(val):  # the chosen move, fitted again on every answer but the gate's
        everything = answers.part(split != GATE)
        fitted = _fit(start, everything, learnable, options, device, warm=fitted)
    head = nn.Linear(start.in_features, start.out_features).requires_grad_(False)
    head.load_state_dict(blend_states(start.state_dict(), fitted.state_dict(), weight))

    current_scores = _scores_on(current, candidates, gate.embeddings)
    refitted_scores = head_scores(head, gate.embeddings)
    gate_metrics = {
        "current": _metrics(current_scores, gate),
        "refitted": _metrics(refitted_scores, gate),
    }
    passed, losses, shortfall = judge(current_scores, refitted_scores, gate, options)
    report = {
        "held_out": gate_metrics,
        "held_out_loss": losses,
        "ranking_shortfall": shortfall,
        "passed": passed,
        "recalibration": recalibration,
        "blend": {"weight": weight, "validation_loss": curve},
        "answers": {
            "used": len(answers),
            "train": len(train),
            "validation": len(val),
            "held_out": len(gate),
            "skipped_other_encoder": skipped,
            "damaged": damaged,
            "people": len({photo.user_id for photo in photos}),
            "people_counted": len(counted),
        },
        "learned_rows": int(learnable.sum()),
        "community_hashtags": community,
    }
    spec = replace(
        base.spec,
        vocabulary=candidates,
        thresholds=_thresholds(head, val, base.spec.thresholds),
        provenance={
            "head": "feedback",
            "started_from": started_from,
            # The model the operator chose, before any learning: every round starts from it,
            # and a learned head is only served on top of it (see bot.wiring.served_checkpoint).
            "base": base_version,
            "pretrained": base.spec.provenance.get("pretrained"),
            "answers": report["answers"],
            "community_hashtags": community,
            "blend_weight": weight,
            "prior_alpha": recalibration["prior_alpha"],
            "held_out_metrics": gate_metrics,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )
    learned_from = np.array(
        sorted(
            photo.suggestion_id for photo, part in zip(photos, split, strict=True) if part != GATE
        ),
        dtype=np.int64,
    )
    return RefitResult(HashtagModel(base.visual, head, spec), passed, report, learned_from)


def _scores_on(model: HashtagModel, candidates: list[str], embeddings: np.ndarray) -> np.ndarray:
    """`model`'s logits in the columns of `candidates`; CANNOT_SUGGEST where it lacks one."""
    own = head_scores(model.head, embeddings)
    column = {tag: i for i, tag in enumerate(model.spec.vocabulary)}
    scores = np.full((len(embeddings), len(candidates)), CANNOT_SUGGEST, dtype=np.float32)
    for i, tag in enumerate(candidates):
        if tag in column:
            scores[:, i] = own[:, column[tag]]
    return scores


def _cell_weights(codes: torch.Tensor, photo_weights: torch.Tensor, options) -> torch.Tensor:
    by_code = torch.tensor([options.unlabelled_weight, options.shown_weight, 1.0, 1.0])
    return by_code.to(codes.device)[codes.long()] * photo_weights[:, None]


def _weighted_loss(logits, codes, photo_weights, options) -> torch.Tensor:
    """The loss per photo, each person weighing as person_weights says; summed over hashtags."""
    per_cell = make_loss(options.loss)(
        logits, (codes == ACCEPTED).float(), _cell_weights(codes, photo_weights, options)
    )
    return per_cell * len(codes) / photo_weights.sum().clamp(min=1e-9)


def _start_head(
    base: HashtagModel,
    train: AnswerSet,
    crowd: AnswerSet | None,
    new_rows: int,
    options: FeedbackOptions,
) -> tuple[nn.Linear, dict[str, float]]:
    """The base head recalibrated as a whole on `crowd`'s answers (see _recalibration; None:
    too few counted people, and the base stays as it is), with a row per community hashtag:
    the direction from the average photo to the average photo that got it, as long as a
    typical row, at its base rate. Also returns the recalibration, for the report."""
    head = base.head
    weight = head.weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu()
    log_prior = centred_log_prior(base.spec.vocabulary)
    base_alpha = base.spec.provenance.get("prior_alpha") or 0.0
    recalibration = (
        _recalibration(head, log_prior, base_alpha, crowd, options)
        if crowd is not None
        else _unchanged(base_alpha)
    )
    scale = recalibration["scale"]
    extended = nn.Linear(head.in_features, head.out_features + new_rows)
    with torch.no_grad():
        extended.weight[: head.out_features] = weight * scale
        extended.bias[: head.out_features] = bias * scale + recalibration["shift"]
        if log_prior is not None:
            more_prior = recalibration["prior_alpha"] - scale * base_alpha
            extended.bias[: head.out_features] += more_prior * torch.tensor(log_prior)
        x = torch.from_numpy(train.embeddings)
        truth = torch.from_numpy(train.truth[:, head.out_features :])
        average = x.mean(dim=0)
        row_length = (weight * scale).norm(dim=1).median().clamp(min=1e-3)
        for row in range(new_rows):
            positives = truth[:, row] > 0
            centre = x[positives].mean(dim=0) if positives.any() else average
            direction = centre - average
            direction *= row_length / direction.norm().clamp(min=1e-6)
            rate = min(max(float(positives.float().mean()), 1e-3), 0.5)
            extended.weight[head.out_features + row] = direction
            extended.bias[head.out_features + row] = (
                math.log(rate / (1 - rate)) - direction @ average
            )
    return extended.requires_grad_(False), recalibration


def _recalibration(
    base: nn.Linear,
    log_prior: list[float] | None,
    base_alpha: float,
    train: AnswerSet,
    options: FeedbackOptions,
) -> dict[str, float]:
    """What the base head's logits need to explain the training answers best: a scale and a
    shift of what the picture says, and the popularity prior's alpha (inference/prior.py).

    Three numbers, so a few dozen answers pin them down long before any hashtag has enough
    people to re-fit its row, and a seeded sample of RECALIBRATION_PHOTOS answers is plenty.
    The base head holds `base_alpha` of the prior (the zero-shot head's default; 0 for a head
    trained on photos, whose biases hold popularity already); the fit starts there, so a head
    the answers cannot improve stays as it was. Without statistics for the vocabulary there is
    no prior to weigh.
    """
    if len(train) > RECALIBRATION_PHOTOS:
        generator = np.random.default_rng(options.seed)
        train = train.part(np.sort(generator.choice(len(train), RECALIBRATION_PHOTOS, False)))
    logits = torch.from_numpy(head_scores(base, train.embeddings)[:, : base.out_features])
    codes = torch.from_numpy(train.codes[:, : base.out_features])
    photo_weights = torch.from_numpy(train.weights)
    prior = torch.tensor(log_prior) if log_prior is not None else torch.zeros(base.out_features)
    picture = logits - base_alpha * prior
    scale = torch.ones((), requires_grad=True)
    shift = torch.zeros((), requires_grad=True)
    alpha = torch.tensor(float(base_alpha), requires_grad=log_prior is not None)

    def fit(parameters: list[torch.Tensor]) -> None:
        optimizer = torch.optim.LBFGS(parameters, max_iter=50, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            recalibrated = picture * scale + shift + alpha * prior
            loss = _weighted_loss(recalibrated, codes, photo_weights, options)
            loss.backward()
            return loss

        optimizer.step(closure)

    fit([scale, shift] + ([alpha] if log_prior is not None else []))
    if float(alpha) > base_alpha:
        # The answers may temper the prior, never sharpen it: the hashtags they name get rows
        # of their own, with their own biases, once enough people used them; a sharper prior
        # would lift the popular hashtags nobody here uses above those rows.
        with torch.no_grad():
            alpha.fill_(base_alpha)
        alpha.requires_grad_(False)
        fit([scale, shift])
    found = {
        name: float(value.detach())
        for name, value in (("scale", scale), ("shift", shift), ("prior_alpha", alpha))
    }
    return found if all(map(math.isfinite, found.values())) else _unchanged(base_alpha)


def _unchanged(base_alpha: float) -> dict[str, float]:
    """The recalibration that leaves the base head as it is."""
    return {"scale": 1.0, "shift": 0.0, "prior_alpha": float(base_alpha)}


def _fit(
    start: nn.Linear,
    train: AnswerSet,
    learnable: np.ndarray,
    options: FeedbackOptions,
    device: torch.device,
    warm: nn.Linear | None = None,
) -> nn.Linear:
    """Logistic regression for the learnable rows, with a Gaussian prior around `start`; the
    other rows stay as they start. From `warm` (a fit on part of these answers), half the
    steps do."""
    if not learnable.any():
        return start
    standard = Standardization.of(train.embeddings)
    begin = standard.head_in_standard_terms(start)
    first = standard.head_in_standard_terms(warm) if warm is not None else begin
    rows = torch.from_numpy(np.flatnonzero(learnable))
    start_weight = begin.weight[rows].detach().clone().to(device)
    weight = nn.Parameter(first.weight[rows].detach().clone().to(device))
    bias = nn.Parameter(first.bias[rows].detach().clone().to(device))
    x = standard.apply(train.embeddings).to(device)
    codes = torch.from_numpy(train.codes[:, rows.numpy()]).to(device)
    photo_weights = torch.from_numpy(train.weights).to(device)
    # A prior worth `prior_strength` photos: it fades as the answers grow.
    prior = options.prior_strength / float(photo_weights.sum())
    steps_per_epoch = math.ceil(len(x) / options.batch_size)
    steps = max(options.epochs * steps_per_epoch, options.min_steps)
    steps = steps // 2 if warm is not None else steps
    optimizer = torch.optim.Adam([weight, bias], lr=options.lr)
    schedule = cosine_schedule(optimizer, steps)
    generator = torch.Generator().manual_seed(options.seed)
    batches = iter(())
    for _ in tqdm(range(steps), desc="re-fitting the head", unit="step", leave=False):
        batch = next(batches, None)
        if batch is None:
            batches = iter(torch.randperm(len(x), generator=generator).split(options.batch_size))
            batch = next(batches)
        batch = batch.to(device)
        logits = nn.functional.linear(x[batch], weight, bias)
        loss = _weighted_loss(logits, codes[batch], photo_weights[batch], options)
        loss = loss + 0.5 * prior * (weight - start_weight).pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    fitted = nn.Linear(begin.in_features, begin.out_features)
    with torch.no_grad():
        fitted.weight.copy_(begin.weight)
        fitted.bias.copy_(begin.bias)
        fitted.weight[rows] = weight.detach().cpu()
        fitted.bias[rows] = bias.detach().cpu()
    return standard.fold(fitted)


def _choose_blend(start: nn.Linear, fitted: nn.Linear, val: AnswerSet, options: FeedbackOptions):
    """The blend weight whose head explains the validation answers best (lowest loss); ties go
    to the one nearer the recalibrated base."""
    curve = {}
    for weight in map(float, HEAD_BLEND_WEIGHTS):
        head = nn.Linear(start.in_features, start.out_features)
        head.load_state_dict(blend_states(start.state_dict(), fitted.state_dict(), weight))
        curve[weight] = answer_loss(head_scores(head, val.embeddings), val, options)
    best = min(curve, key=lambda weight: (curve[weight], weight))
    return best, curve


def judge(
    current: np.ndarray, refitted: np.ndarray, gate: AnswerSet, options: FeedbackOptions
) -> tuple[bool, dict[str, float], float]:
    """The gate: (passed, loss of each head, ranking shortfall) on answers neither trained on.
    Passed when the re-fitted head's loss is not higher and its ranking not clearly worse."""
    losses = {
        "current": answer_loss(current, gate, options),
        "refitted": answer_loss(refitted, gate, options),
    }
    shortfall = ranking_shortfall(current, refitted, gate)
    return losses["refitted"] <= losses["current"] and shortfall <= 0, losses, shortfall


def answer_loss(logits: np.ndarray, part: AnswerSet, options: FeedbackOptions) -> float:
    """The training loss on answers the head never saw: how well it explains what people said,
    each answer on its own, each person weighing as in training.

    Ranking metrics against accepted hashtags favour the head that chose what was shown, since
    people mostly accept what they are shown; the loss scores every answer, shown or typed.
    """
    loss = _weighted_loss(
        torch.from_numpy(logits).float(),
        torch.from_numpy(part.codes),
        torch.from_numpy(part.weights),
        options,
    )
    return float(loss)


def _per_photo_quality(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """precision@1 + recall@5 of each photo (rows with an accepted hashtag only)."""
    return top_k_hits(scores, truth, 1) + top_k_hits(scores, truth, 5) / truth.sum(axis=1)


def ranking_shortfall(current: np.ndarray, refitted: np.ndarray, part: AnswerSet) -> float:
    """How far the re-fitted head's precision@1 + recall@5 falls below the served head's on
    the same photos, beyond two standard errors of the (person-weighted) paired difference;
    <= 0 when it is not clearly worse. (A handful of answers cannot tell small differences
    apart.)"""
    truth = part.truth.astype(bool)
    labelled = truth.any(axis=1)
    if not labelled.any():
        return 0.0
    truth, weights = truth[labelled], part.weights[labelled].astype(np.float64)
    difference = _per_photo_quality(refitted[labelled], truth) - _per_photo_quality(
        current[labelled], truth
    )
    weights = weights / weights.sum()
    mean = float((weights * difference).sum())
    effective = 1.0 / float((weights**2).sum())  # Kish's effective sample size
    spread = float(np.sqrt((weights * (difference - mean) ** 2).sum()))
    error = spread / math.sqrt(effective) if effective > 1 else 0.0
    return -mean - 2 * error


def _metrics(scores: np.ndarray, part: AnswerSet) -> dict[str, float]:
    """The paper's table; a part where nobody accepted anything scores 0, not an error."""
    if not part.truth.any():
        return {"precision@1": 0.0, "recall@5": 0.0, "accuracy@5": 0.0, "map": 0.0}
    return ranking_metrics(scores, part.truth)


def _thresholds(head: nn.Linear, val: AnswerSet, previous: list[float] | None) -> list[float]:
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
