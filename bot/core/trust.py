"""Trust earned per person: how much their own history may change their suggestions.

Personalisation helps people with habits (a favourite topic, a hashtag of their own) and can
only add noise for people without them. So each person's history terms count in proportion to
how well that history has predicted what they went on to accept, judged on their own answers:

For each answered photo, among the hashtags the bot showed (everyone of which the person saw,
so each one's fate is known), did the personalised order put the accepted ones higher than the
model's own order would have? Hashtags the bot did not show are left out: whether someone would
have accepted them is unknown, and counting only the ones they typed would favour whichever
order chose what was shown. The personalised order compared is always the full-strength one,
so a person whose trust is low still earns it back once their habits start to predict.

A photo on which every shown hashtag was accepted (a 👍 accepts them all) is no evidence, even
where personalisation showed hashtags the model's own top k did not have: had the model's
picks been shown instead, a person who accepts everything would have accepted those too, so
the 👍 cannot say which order was better, and counting it as a win would give everyone who
👍s full trust, habits or not. (Nor does the store know the model's own top k: it keeps the
two logits of the shown hashtags only.) benchmarks/personalization.py --thumbs-up measures it,
in the hard population: counted as wins, such photos took people without habits who always 👍
to trust 1.95 and their recall@5 to 0.36x after 100 posts (0.66x with no evidence); people with
habits who always 👍 got no more from it (1.11x against 1.12x: what holds them back is the
wrong hashtags their 👍s put into their history, not trust); and everyone's rate rose with
them, costing people without habits who answer tag by tag 0.010 recall@5 after 20 posts.

Wins and losses are shrunk towards everyone's rate while a person has few of them; a rate of
one half (personalisation no better than the model) means no personalisation at all, and a
person whose history keeps winning gets up to TRUST_MAX times the default weights. Everyone's
rate itself starts at DEFAULT_RATE, the rate that gives the default weights unchanged, so a bot
without any evidence yet personalises as it did before trust was earned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bot.store.records import ShownEntry

TRUST_MAX = 2.0
# A person's own record counts as much as everyone's once it holds this many decided photos.
TRUST_PRIOR_PHOTOS = 10.0
# Everyone's rate before there is evidence, and how many decided photos that guess is worth.
DEFAULT_RATE, DEFAULT_RATE_PHOTOS = 0.75, 20.0


def personal_order_won(shown: list[ShownEntry], verdicts: dict[str, int]) -> int:
    """+1 when the personalised order ranked this photo's accepted hashtags higher than the
    model's order, -1 when lower, 0 when it made no difference or there is nothing to judge.

    `shown`: the bot's entries, with the model's logit and the full-strength personalised one;
    older entries without the two logits say nothing.
    """
    entries = [entry for entry in shown if entry.personal_logit is not None]
    accepted = np.array([verdicts.get(entry.tag, 0) > 0 for entry in entries])
    if not accepted.any() or accepted.all():
        return 0
    plain = _discounted_hits(np.array([entry.model_logit for entry in entries]), accepted)
    personal = _discounted_hits(np.array([entry.personal_logit for entry in entries]), accepted)
    if abs(personal - plain) < 1e-9:
        return 0
    return 1 if personal > plain else -1


def _discounted_hits(logits: np.ndarray, accepted: np.ndarray) -> float:
    """Accepted hashtags in this order, each worth 1 / log2(rank + 1) (DCG)."""
    order = np.argsort(-logits, kind="stable")
    ranks = np.arange(1, len(order) + 1)
    return float((accepted[order] / np.log2(ranks + 1)).sum())


def everyones_rate(wins: float, losses: float) -> float:
    """The share of decided photos where personalisation won, across everyone."""
    return (wins + DEFAULT_RATE_PHOTOS * DEFAULT_RATE) / (wins + losses + DEFAULT_RATE_PHOTOS)


def trust_multiplier(wins: float, losses: float, everyone: float) -> float:
    """How strongly a person's history terms count: 0 (the model's ranking) to TRUST_MAX."""
    rate = (wins + TRUST_PRIOR_PHOTOS * everyone) / (wins + losses + TRUST_PRIOR_PHOTOS)
    return TRUST_MAX * float(np.clip(2 * rate - 1, 0.0, 1.0))
