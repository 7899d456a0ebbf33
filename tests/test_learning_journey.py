"""The learning loop as people and an operator live it, with nothing written by hand.

Seven people chat through real `python -m bot --console` processes, typing the hashtags their
photos show; five of them also type a hashtag of their own crew. The operator runs `python -m
finetune feedback` on the bot's database, then serves the result with `python -m bot
--checkpoint`. One of the crew uses /forget; the next round, run the way `--learn-every` runs
it, holds nothing of them.
"""

import asyncio
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.tagged_photos import TAGS, tagged_photos
from bot.operations.checkpoints import CheckpointWatcher
from bot.operations.learning import Learner, child_environment, feedback_command
from bot.options import build_parser
from bot.wiring import model_options as _model_options
from bot.wiring import sharing_options as _sharing_options
from inference.engine import InferenceEngine
from inference.loading import load_checkpoint
from inference.spec import checkpoint_version

PEOPLE = 7
PHOTOS_EACH = 60
CREW = 5  # people who also type #ourcrew on their first photos


def top1_right(model, embeddings: np.ndarray, truth: list[tuple[str, ...]]) -> float:
    with torch.no_grad():
        logits = model.head(torch.from_numpy(embeddings)).numpy()
    best = [model.spec.vocabulary[i] for i in logits.argmax(axis=1)]
    return float(np.mean([tag in tags for tag, tags in zip(best, truth, strict=True)]))


def embed(model, photos) -> np.ndarray:
    transform = model.spec.eval_transform()
    pixels = torch.from_numpy(np.stack([transform(photo.image) for photo in photos]))
    with torch.no_grad():
        return model.embed(pixels).numpy()


async def run(*command: str, script: str = "", user: str = "operator") -> tuple[int, str]:
    environment = {**os.environ, "USER": user, "LOGNAME": user}
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command, env=environment, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(script.encode()), 300)
    return process.returncode, out.decode()


async def chat(person: int, photos, folder: Path, db: Path, model_options) -> None:
    """One person's console session: each photo, then its hashtags typed as a reply."""
    lines = []
    for i, photo in enumerate(photos):
        path = folder / f"{person}-{i}.jpg"
        photo.image.save(path, quality=92)
        own = ["ourcrew"] if person < CREW and i < 6 else []
        lines += [str(path), " ".join(f"#{tag}" for tag in (*photo.tags, *own))]
    status, out = await run(
        "-m", "bot", "--console", "--db", str(db), *model_options,
        script="\n".join([*lines, "quit", ""]), user=f"person{person}",
    )  # fmt: skip
    assert status == 0 and out.count("Saved") >= len(photos), out[-2000:]


async def test_people_answer_the_operator_learns_and_a_forget_reaches_the_next_round(
    tiny_model, tiny_clip_files, tmp_path
):
    config, weights = tiny_clip_files
    model_options = ["--model", config, "--pretrained", weights, "--device", "cpu"]
    db, learned = tmp_path / "bot.sqlite3", tmp_path / "learned"
    photos = tagged_photos(PEOPLE * PHOTOS_EACH, seed=1)
    await chat(0, photos[:PHOTOS_EACH], tmp_path, db, model_options)  # the first start
    await asyncio.gather(
        *(
            chat(p, photos[p * PHOTOS_EACH : (p + 1) * PHOTOS_EACH], tmp_path, db, model_options)
            for p in range(1, PEOPLE)
        )
    )

    # The operator learns from the bot's own database (answers all came today: --min-days 1).
    status, out = await run(
        "-m", "finetune", "feedback", "--db", str(db), "--out", str(learned), "--min-days", "1",
        *model_options,
    )  # fmt: skip
    assert status == 0 and out.strip().endswith(f"checkpoint written to {learned}"), out
    first = load_checkpoint(learned)
    assert "ourcrew" in first.spec.vocabulary  # five people typed it

    # It learned what the answers say: judged on photos nobody answered, against a plain
    # logistic regression on the same stored embeddings.
    unseen = tagged_photos(150, seed=2)
    truth = [photo.tags for photo in unseen]
    unseen_embeddings = embed(tiny_model, unseen)
    answered = embed(tiny_model, photos)
    regression = np.zeros((len(unseen), len(TAGS)))
    for column, tag in enumerate(TAGS):
        labels = [tag in photo.tags for photo in photos]
        fitted = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        regression[:, column] = fitted.fit(answered, labels).decision_function(unseen_embeddings)
    best = [TAGS[i] for i in regression.argmax(axis=1)]
    plain = float(np.mean([tag in tags for tag, tags in zip(best, truth, strict=True)]))
    learned_right = top1_right(first, unseen_embeddings, truth)
    popularity = float(np.mean(["dog" in tags for tags in truth]))
    assert top1_right(tiny_model, unseen_embeddings, truth) < popularity < 0.5
    assert learned_right >= plain - 0.05, (learned_right, plain)
    assert learned_right > popularity + 0.3

    # The bot serves what was learned.
    path = tmp_path / "new.jpg"
    unseen[0].image.save(path, quality=92)
    status, out = await run(
        "-m", "bot", "--console", "--db", str(db), "--checkpoint", str(learned), "--device",
        "cpu", script=f"{path}\nquit\n", user="newcomer",
    )  # fmt: skip
    assert status == 0 and any(f"#{tag}" in out for tag in unseen[0].tags), out

    # One of the crew forgets; the next round, run as --learn-every runs it, shares no more
    # #ourcrew (four people are not enough), and replaces the head whatever its gate says.
    status, out = await run(
        "-m", "bot", "--console", "--db", str(db), *model_options, script="forget\nquit\n",
        user="person0",
    )  # fmt: skip
    assert status == 0, out
    args = build_parser().parse_args(
        ["--db", str(db), "--learn-every", "1", "--min-days", "1", *model_options]
    )
    async with InferenceEngine(first, torch.device("cpu")) as engine:
        watcher = CheckpointWatcher(
            engine, learned, lambda d: (load_checkpoint(d), checkpoint_version(d))
        )
        command = feedback_command(learned, _model_options(args), _sharing_options(args), False)
        assert "--checkpoint" in command()  # judged against the learned head it serves
        learner = Learner(command, watcher, 1, child_environment(str(db)))
        assert await learner.learn_once()
        second = engine.model
    assert "ourcrew" not in second.spec.vocabulary
    assert second.spec.provenance["base"] == first.spec.provenance["base"]
    assert second.spec.provenance["answers"]["used"] == (PEOPLE - 1) * PHOTOS_EACH
