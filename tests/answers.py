"""Stored answers for the learning tests: suggestions with chosen embeddings, written through
the real store in the format the bot writes (the real ranking's entries, logits and all)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bot.core.personalize import GlobalPrior, Weights, rank
from bot.store import VERDICT_ACCEPT, Store
from inference.model import HashtagModel


@dataclass
class Scene:
    """Photos of one kind: embeddings near one direction of the tiny model's space."""

    centre: np.ndarray

    @classmethod
    def random(cls, seed: int, dim: int = 32) -> Scene:
        return cls(np.random.default_rng(seed).normal(size=dim))

    @property
    def typical(self) -> np.ndarray:
        return (self.centre / np.linalg.norm(self.centre)).astype(np.float32)

    def photo(self, rng: np.random.Generator) -> np.ndarray:
        vector = self.centre + 0.1 * rng.normal(size=len(self.centre))
        return (vector / np.linalg.norm(vector)).astype(np.float32)


def current_ranking(model: HashtagModel, embedding: np.ndarray) -> list[str]:
    with torch.no_grad():
        logits = model.head(torch.from_numpy(embedding)).numpy()
    return [model.spec.vocabulary[i] for i in np.argsort(-logits, kind="stable")]


async def answer(
    store: Store,
    model: HashtagModel,
    person: str,
    embedding: np.ndarray,
    accepted: list[str],
    encoder: str | None = None,
) -> int:
    """The bot shows the model's top 10 for the photo; `person` accepts (or types) `accepted`."""
    user_id = await store.user_id("telegram", person)
    with torch.no_grad():
        scores = torch.sigmoid(model.head(torch.from_numpy(embedding))).numpy()
    ranking = rank(
        scores,
        model.spec.vocabulary,
        embedding,
        None,
        GlobalPrior({}, 0, len(model.spec.vocabulary)),
        Weights(),
    )
    suggestion_id = await store.add_suggestion(
        user_id, "telegram", embedding, ranking.shown(10), "test", encoder or model.encoder_id
    )
    await store.record_feedback(suggestion_id, user_id, accepted, VERDICT_ACCEPT, "typed")
    return suggestion_id
