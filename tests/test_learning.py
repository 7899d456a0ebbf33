"""Learning from everyone's answers: the re-fit, its gate, community hashtags, forgetting,
`python -m finetune feedback`, and heads swapped into a running bot."""

import asyncio
import copy
import json
import logging
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.core.service import DEFAULT_TOP_K, HashtagService, UserRef
from bot.operations.checkpoints import CheckpointWatcher
from bot.operations.checkpoints import checkpoint_stamp as stamp
from bot.operations.learning import Learner, child_environment
from bot.operations.learning import feedback_command as feedback_command_of
from bot.store import Store
from finetune.answers import ACCEPTED, AnswerSet
from finetune.base_model import base_of
from finetune.cli import main as finetune_main
from finetune.feedback import FeedbackOptions, judge, refit_head
from finetune.publish import publish_checkpoint
from inference.backends.export import export_for_serving
from inference.backends.onnx_runtime import load_onnx
from inference.cli import main as inference_main
from inference.engine import InferenceEngine
from inference.loading import load_checkpoint, save_checkpoint
from inference.prior import DEFAULT_PRIOR_ALPHA, centred_log_prior
from inference.spec import checkpoint_version, zero_shot_version
from tests.answers import Scene, answer, current_ranking
from tests.corpus import jpeg

CPU = torch.device("cpu")


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    yield store
    await store.close()


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    """The tiny zero-shot model saved as the checkpoint a bot serves."""
    directory = tmp_path / "live"
    save_checkpoint(tiny_model, directory)
    return directory


def missed_tag(model, scene: Scene) -> str:
    """A vocabulary hashtag the current head ranks low for this scene."""
    return current_ranking(model, scene.typical)[500]


async def answers_that_teach(store, model, tag: str, photos: int = 40, seed: int = 0):
    """Six people keep typing `tag` on photos of one scene: a lesson the head can learn."""
    rng, scene = np.random.default_rng(seed), Scene.random(seed)
    for i in range(photos):
        await answer(store, model, f"p{i % 6}", scene.photo(rng), [tag])
    return scene


# Tests write every answer within seconds: count everyone from their first day.
SAME_DAY = {"min_days": 1}


async def refit(store, model, **options):
    answered = await store.answered_photos(model.encoder_id)
    options = FeedbackOptions(**{**SAME_DAY, **options})
    return refit_head(model, answered.photos, options, "test-base", skipped=answered.other_encoder)


# --- the re-fit and its gate -------------------------------------------------------------


async def test_a_consistent_lesson_is_learned_and_passes_the_gate(store, tiny_model):
    scene = Scene.random(0)
    tag = missed_tag(tiny_model, scene)
    await answers_that_teach(store, tiny_model, tag)
    result = await refit(store, tiny_model)
    gate = result.report["held_out"]
    assert result.passed
    assert gate["refitted"]["recall@5"] > gate["current"]["recall@5"] == 0
    assert tag in current_ranking(result.model, scene.typical)[:5]
    assert result.model.visual is tiny_model.visual  # same encoder, only the head moved
    assert tiny_model.spec.provenance["head"] == "zero-shot"  # the start is left as it was


def test_the_gate_refuses_a_head_that_ranks_the_held_out_answers_worse():
    rng = np.random.default_rng(0)
    codes = np.zeros((60, 20), np.uint8)
    codes[np.arange(60), rng.integers(0, 20, 60)] = ACCEPTED
    gate = AnswerSet(np.zeros((60, 4), np.float32), codes, np.ones(60, np.float32), np.arange(60))
    good = np.where(codes == ACCEPTED, 2.0, -2.0).astype(np.float32)
    noisy = good + rng.normal(0, 3, good.shape).astype(np.float32)
    options = FeedbackOptions()
    passed, losses, shortfall = judge(good, noisy, gate, options)
    assert not passed and losses["refitted"] > losses["current"] and shortfall > 0
    assert judge(noisy, good, gate, options)[0]  # and lets the better one through


async def test_answers_made_by_another_encoder_are_skipped_and_counted(store, tiny_model):
    scene = Scene.random(2)
    await answers_that_teach(store, tiny_model, missed_tag(tiny_model, scene), seed=2)
    rng = np.random.default_rng(3)
    for i in range(5):
        await answer(store, tiny_model, f"q{i}", scene.photo(rng), ["old"], encoder="another")
    result = await refit(store, tiny_model)
    assert result.report["answers"]["used"] == 40
    assert result.report["answers"]["skipped_other_encoder"] == 5


async def test_too_few_answers_is_a_clear_error(store, tiny_model):
    await answers_that_teach(store, tiny_model, "beach", photos=5)
    with pytest.raises(ValueError, match="at least 20 are needed"):
        await refit(store, tiny_model)


# --- what is shared, and forgetting ------------------------------------------------------


CREW_PHOTOS = 5  # each: enough that some of them train, whichever part the others land in


async def crew_answers(store, model, people: int, seed: int = 4, leave_out: str = ""):
    """`people` different people type #ourcrew on CREW_PHOTOS photos each, among 40 answers;
    `leave_out` names a person whose answers are not written (as if they had never used the
    bot)."""
    rng, scene = np.random.default_rng(seed), Scene.random(seed)
    common = missed_tag(model, scene)
    for i in range(40):
        crew = i // CREW_PHOTOS < people
        person = f"crew{i // CREW_PHOTOS}" if crew else f"p{i % 6}"
        photo = scene.photo(rng)
        if person != leave_out:
            await answer(store, model, person, photo, [common, "ourcrew"] if crew else [common])


@pytest.mark.parametrize(("people", "shared"), [(4, False), (5, True)])
async def test_a_new_hashtag_is_shared_only_when_five_people_used_it(
    store, tiny_model, people, shared
):
    await crew_answers(store, tiny_model, people)
    result = await refit(store, tiny_model)
    assert ("ourcrew" in result.model.spec.vocabulary) is shared
    assert result.report["community_hashtags"] == (["ourcrew"] if shared else [])
    assert result.model.head.out_features == len(result.model.spec.vocabulary)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_after_forget_a_refit_holds_nothing_of_that_person(
    tmp_path, tiny_model, backend, request
):
    # The same answers twice: in one database crew0 later uses /forget, in the other crew0
    # never existed. The re-fits must be identical, and #ourcrew falls back to 4 people.
    if backend == "sqlite":
        locations = tmp_path / "forgot.sqlite3", tmp_path / "never.sqlite3"
    else:
        server = request.getfixturevalue("postgres_server")
        locations = server.create_database("forgot"), server.create_database("never")
    forgot, never = [await Store.open(location) for location in locations]
    try:
        await crew_answers(forgot, tiny_model, people=5)
        crew0 = await forgot.find_user_id("telegram", "crew0")
        async with InferenceEngine(tiny_model, CPU) as engine:  # /forget, as the bot runs it
            assert await HashtagService(engine, forgot).forget(UserRef("telegram", "crew0"))
        await crew_answers(never, tiny_model, people=5, leave_out="crew0")
        photos = (await forgot.answered_photos(tiny_model.encoder_id)).photos
        assert len(photos) == 40 - CREW_PHOTOS and crew0 not in {photo.user_id for photo in photos}
        after_forget, without = await refit(forgot, tiny_model), await refit(never, tiny_model)
    finally:
        await forgot.close()
        await never.close()
    assert "ourcrew" not in after_forget.model.spec.vocabulary
    assert after_forget.model.spec.vocabulary == without.model.spec.vocabulary
    assert torch.equal(after_forget.model.head.weight, without.model.head.weight)
    assert torch.equal(after_forget.model.head.bias, without.model.head.bias)
    assert after_forget.report["answers"] == without.report["answers"]


# --- python -m finetune feedback ---------------------------------------------------------


def feedback_command(db, checkpoint, out, *extra):
    return finetune_main(
        ["feedback", "--db", str(db), "--checkpoint", str(checkpoint), "--out", str(out), *extra]
    )


def same_day_feedback_command(db, checkpoint, out, *extra):
    return feedback_command(db, checkpoint, out, "--min-days", "1", *extra)


async def test_the_command_writes_a_checkpoint_that_inference_loads(
    store, tiny_model, checkpoint, tmp_path, capsys
):
    await answers_that_teach(store, tiny_model, missed_tag(tiny_model, Scene.random(0)))
    out, db = tmp_path / "learned", tmp_path / "bot.sqlite3"
    assert await asyncio.to_thread(same_day_feedback_command, db, checkpoint, out) == 0
    printed = capsys.readouterr().out
    assert "held-out answers" in printed and "refitted" in printed
    assert printed.strip().splitlines()[-1] == f"checkpoint written to {out}"
    report = json.loads((out / "metrics.json").read_text())
    assert report["passed"] and report["written"]
    learned = load_checkpoint(out)
    assert learned.spec.provenance["head"] == "feedback"
    assert learned.spec.provenance["base"] == checkpoint_version(checkpoint)
    assert len(learned.spec.thresholds) == len(learned.spec.vocabulary)
    base, base_version = base_of(learned, out)  # it carries the model it was learned on
    assert base_version == checkpoint_version(checkpoint)
    assert torch.equal(base.head.weight, tiny_model.head.weight)
    assert base.spec.vocabulary == tiny_model.spec.vocabulary
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(seed=1))
    command = ["--checkpoint", str(out), "--device", "cpu", str(photo)]
    assert await asyncio.to_thread(inference_main, command) == 0


async def test_the_command_refuses_a_worse_head_unless_forced(
    store, tiny_model, checkpoint, tmp_path, capsys
):
    # Learned with --min-people 1, the served head knows what three people type; by the
    # default rule (five people, on two days) no row may learn it, so a re-fit is worse.
    scene = Scene.random(1)
    rng, tag = np.random.default_rng(1), missed_tag(tiny_model, scene)
    for i in range(60):
        await answer(store, tiny_model, f"p{i % 3}", scene.photo(rng), [tag])
    db, out = tmp_path / "bot.sqlite3", tmp_path / "learned"
    assert (
        await asyncio.to_thread(same_day_feedback_command, db, checkpoint, out, "--min-people", "1")
        == 0
    )
    served = checkpoint_version(out)
    capsys.readouterr()
    assert await asyncio.to_thread(feedback_command, db, out, out) == 1
    assert "not written" in capsys.readouterr().out.strip().splitlines()[-1]
    assert checkpoint_version(out) == served and (out / "metrics.json").is_file()
    report = json.loads((out / "metrics.json").read_text())
    assert report["learned_rows"] == 0 and not report["passed"]
    assert await asyncio.to_thread(feedback_command, db, out, out, "--force") == 0
    assert "--force" in capsys.readouterr().out.strip().splitlines()[-1]
    assert checkpoint_version(out) != served
    # Every round starts from the base: the learned head's own base, not the learned head.
    assert load_checkpoint(out).spec.provenance["base"] == checkpoint_version(checkpoint)


def test_the_command_explains_a_missing_database(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        feedback_command(tmp_path / "nope.sqlite3", checkpoint, tmp_path / "out")
    assert exit_info.value.code == 2
    assert "point it at the bot's database" in capsys.readouterr().err


# --- a running bot takes new heads -------------------------------------------------------


def loader(directory):
    model = load_checkpoint(directory)
    return model, checkpoint_version(directory)


async def learned_head(tiny_model, tmp_path, people: int = 5):
    """A re-fitted head with one more hashtag (#ourcrew) than the tiny model."""
    store = await Store.open(tmp_path / "teach.sqlite3")
    try:
        await crew_answers(store, tiny_model, people)
        return await refit(store, tiny_model)
    finally:
        await store.close()


async def test_a_head_swapped_under_a_burst_of_photos_loses_none(tiny_model, checkpoint, tmp_path):
    result = await learned_head(tiny_model, tmp_path)
    store = await Store.open(tmp_path / "bot.sqlite3")
    old_version = checkpoint_version(checkpoint)
    async with InferenceEngine(tiny_model, CPU, version=old_version, max_wait_ms=2) as engine:
        service = HashtagService(engine, store, rate_limit=None)
        watcher = CheckpointWatcher(engine, checkpoint, loader, served_stamp=stamp(checkpoint))
        photos = [jpeg(seed=i % 7) for i in range(120)]

        async def send(i: int):
            await asyncio.sleep(i * 0.002)  # a steady stream, not all at once
            return await service.suggest(UserRef("console", f"u{i % 9}"), [photos[i]])

        burst = [asyncio.create_task(send(i)) for i in range(len(photos))]
        await asyncio.sleep(0.1)  # part of the stream is answered or in flight on the old head
        await asyncio.to_thread(
            publish_checkpoint, result.model, checkpoint, result.report, with_onnx=False
        )
        assert await watcher.check()
        suggestions = await asyncio.gather(*burst)
        later = await service.suggest(UserRef("console", "late"), [photos[0]])
    versions = [
        (await store.suggestion(suggestion.id)).model_version
        for suggestion in [*suggestions, later]
    ]
    await store.close()
    new_version = checkpoint_version(checkpoint)
    assert len(suggestions) == 120 and all(len(s.tags) == DEFAULT_TOP_K for s in suggestions)
    assert new_version != old_version and set(versions) == {old_version, new_version}
    assert versions[0] == old_version and versions[-1] == new_version
    # Each suggestion's hashtags come from the vocabulary of the head recorded with it.
    for suggestion, version in zip(suggestions, versions, strict=False):
        tags = {tag for tag, _ in suggestion.tags}
        assert version == new_version or tags <= set(tiny_model.spec.vocabulary)
    assert len(list(tmp_path.glob("live.previous-*"))) == 1  # kept for a rollback


async def test_a_broken_checkpoint_is_refused_and_the_old_head_serves(
    tiny_model, checkpoint, tmp_path, caplog
):
    result = await learned_head(tiny_model, tmp_path)
    staging = tmp_path / "staging"
    save_checkpoint(result.model, staging)
    weights = staging / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    old_version = checkpoint_version(checkpoint)
    async with InferenceEngine(tiny_model, CPU, version=old_version) as engine:
        watcher = CheckpointWatcher(engine, checkpoint, loader)
        shutil.rmtree(checkpoint)
        staging.rename(checkpoint)
        with caplog.at_level(logging.WARNING, logger="bot.operations.checkpoints"):
            assert not await watcher.check()
            assert not await watcher.check()  # not retried until it changes again
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1 and "cannot be loaded" in refusals[0].getMessage()
        assert refusals[0].levelname == "ERROR"
        prediction = await engine.predict(jpeg(seed=2))
        assert prediction.model_version == old_version == engine.model_version
        assert len(prediction.vocabulary) == len(tiny_model.spec.vocabulary)


async def until(condition, timeout: float = 30) -> None:
    """Wait (polling) until `condition()` holds; fail the test if it never does."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_an_unreadable_checkpoint_is_logged_once_and_the_watcher_keeps_watching(
    tiny_model, checkpoint, monkeypatch, caplog
):
    real_stat, denied = Path.stat, []

    def stat(path, *args, **kwargs):
        if path.parent == checkpoint:
            denied.append(path)
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    async with InferenceEngine(tiny_model, CPU, version="old") as engine:
        load = lambda directory: (tiny_model, "new")  # noqa: E731
        watcher = CheckpointWatcher(engine, checkpoint, load, 0.001, stamp(checkpoint))
        watching = asyncio.create_task(watcher.run())
        with caplog.at_level(logging.ERROR, logger="bot.operations.checkpoints"):
            monkeypatch.setattr(Path, "stat", stat)
            await until(lambda: len(denied) >= 3)  # several checks failed
            monkeypatch.undo()
            (checkpoint / "config.json").touch()  # the checkpoint changes once readable again
            await until(lambda: engine.model_version == "new")
        watching.cancel()
    failures = [r for r in caplog.records if "Permission denied" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelname == "ERROR"


class FailingWatcher:
    """A CheckpointWatcher whose every check fails, counting them."""

    def __init__(self, directory: Path):
        self.directory, self.checks = directory, 0

    async def check(self) -> bool:
        self.checks += 1
        raise OSError("the checkpoint directory is on a disk that went away")


async def test_a_round_whose_swap_fails_is_logged_and_the_next_round_runs(tmp_path, caplog):
    watcher = FailingWatcher(tmp_path / "learned")
    learner = Learner(lambda: [sys.executable, "-c", "pass"], watcher, 1e-6)  # exit 0: written
    with caplog.at_level(logging.ERROR, logger="bot.operations.learning"):
        learning = asyncio.create_task(learner.run())
        await until(lambda: watcher.checks >= 2 or learning.done())
        learning.cancel()
        results = await asyncio.gather(learning, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError), "the learner must outlive a round"
    assert any("disk that went away" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
async def test_the_learner_refits_on_its_own_database_and_swaps_the_head_in(
    tiny_model, tiny_clip_files, tmp_path, backend
):
    """Each round is `python -m finetune feedback` in a child process; on ONNX (a CPU's
    default) it writes the learned head's graph too."""
    db = tmp_path / "bot.sqlite3"
    store = await Store.open(db)
    scene = Scene.random(0)
    tag = missed_tag(tiny_model, scene)
    await answers_that_teach(store, tiny_model, tag)
    learned = tmp_path / "learned-model"
    served = tiny_model
    if backend == "onnx":
        served = load_onnx(export_for_serving(copy.deepcopy(tiny_model), tmp_path / "zero-shot"))
    config, weights = tiny_clip_files
    options = ["--model", config, "--pretrained", weights, "--device", "cpu"]
    async with InferenceEngine(served, CPU, version="zero-shot:tiny") as engine:
        watcher = CheckpointWatcher(engine, learned, loader)
        command = feedback_command_of(learned, options, ["--min-days", "1"], backend == "onnx")
        learner = Learner(command, watcher, 24, child_environment(str(db)))
        assert await learner.learn_once()
        assert engine.model_version == checkpoint_version(learned)
        assert (learned / "model.onnx").is_file() == (backend == "onnx")
        assert load_checkpoint(learned).spec.provenance["base"] == zero_shot_version(
            config, weights
        )
        assert tag in current_ranking(load_checkpoint(learned), scene.typical)[:5]
        # Chats went on through the same store meanwhile, and still do.
        service = HashtagService(engine, store, rate_limit=None)
        suggestion = await service.suggest(UserRef("telegram", "p0"), [jpeg(seed=3)])
        assert (await store.suggestion(suggestion.id)).model_version == engine.model_version
    await store.close()


async def test_a_round_that_cannot_learn_is_logged_and_the_head_keeps_serving(
    tiny_model, tiny_clip_files, tmp_path, caplog
):
    db = tmp_path / "bot.sqlite3"
    await (await Store.open(db)).close()  # a bot that has no answers yet
    config, weights = tiny_clip_files
    options = ["--model", config, "--pretrained", weights, "--device", "cpu"]
    async with InferenceEngine(tiny_model, CPU, version="zero-shot:tiny") as engine:
        watcher = CheckpointWatcher(engine, tmp_path / "learned", loader)
        learner = Learner(
            feedback_command_of(tmp_path / "learned", options, [], False),
            watcher,
            24,
            child_environment(str(db)),
        )
        with caplog.at_level(logging.INFO, logger="bot.operations.learning"):
            assert not await learner.learn_once()
        assert engine.model_version == "zero-shot:tiny"
    assert any("not learning yet" in r.getMessage() and "at least 20" in r.getMessage()
               for r in caplog.records)  # fmt: skip


# --- online quality per model version ----------------------------------------------------


def sample(name: str, version: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(f"{name}_total", {"model_version": version}) or 0.0


async def test_quality_is_counted_per_model_version_once_per_answer(tiny_model, tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    version = "quality-test"
    async with InferenceEngine(tiny_model, CPU, version=version) as engine:
        service = HashtagService(engine, store, rate_limit=None)
        alice = UserRef("telegram", "alice")
        first = await service.suggest(alice, [jpeg(seed=1)])
        second = await service.suggest(alice, [jpeg(seed=2)])
        shown = [tag for tag, _ in first.tags]
        await service.accept(alice, first.id, shown[:2], source="button")
        await service.accept(alice, first.id, source="reaction")  # 👍 after the button
        await service.reject(alice, second.id, [second.tags[3][0]], source="button")
    await store.close()
    assert sample("hashtag_suggestions_shown", version) == 2
    assert sample("hashtag_tags_accepted", version) == DEFAULT_TOP_K  # each shown tag once
    assert sample("hashtag_first_tag_accepted", version) == 1
    assert sample("hashtag_tags_rejected", version) == 1


# --- python -m bot --learn-every ---------------------------------------------------------


async def run_console_bot(db, *options: str, script: str = "quit\n"):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--console", "--device", "cpu", "--db", str(db), *options,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(script.encode()), 300)
    return process.returncode, out.decode()


async def test_the_bot_serves_its_learned_head_after_a_restart(tiny_model, checkpoint, tmp_path):
    db, learned = tmp_path / "bot.sqlite3", tmp_path / "learned-model"
    store = await Store.open(db)
    await answers_that_teach(store, tiny_model, missed_tag(tiny_model, Scene.random(0)))
    photos = (await store.answered_photos(tiny_model.encoder_id)).photos
    await store.close()
    base = checkpoint_version(checkpoint)
    result = refit_head(tiny_model, photos, FeedbackOptions(**SAME_DAY), base)
    publish_checkpoint(result.model, learned, result.report, False, base=(tiny_model, base))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(seed=1))
    options = ("--checkpoint", str(checkpoint), "--learn-every", "24")
    status, out = await run_console_bot(db, *options, script=f"{photo}\nquit\n")
    assert status == 0 and "#" in out, out
    with sqlite3.connect(db) as connection:
        (version,) = connection.execute(
            "SELECT model_version FROM suggestions ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert version == checkpoint_version(learned)
    # A head learned on top of another model is never served on this one.
    other = tmp_path / "other"
    save_checkpoint(tiny_model, other)
    config = json.loads((other / "config.json").read_text())
    config["provenance"]["run"] = "another"
    (other / "config.json").write_text(json.dumps(config))
    status, out = await run_console_bot(db, "--checkpoint", str(other), "--learn-every", "24")
    assert status == 2 and "learned on top of" in out


async def test_a_learned_head_for_the_onnx_backend_comes_with_its_graph(tiny_model, tmp_path):
    result = await learned_head(tiny_model, tmp_path)
    out = tmp_path / "learned-onnx"
    await asyncio.to_thread(publish_checkpoint, result.model, out, result.report, True)
    served = load_onnx(out)
    assert served.spec.vocabulary == result.model.spec.vocabulary
    assert served.encoder_id == tiny_model.encoder_id  # the same encoder: its answers count
    logits, _ = served(np.zeros((1, 3, 32, 32), np.float32))
    assert logits.shape == (1, len(result.model.spec.vocabulary))


async def test_a_shutdown_ends_a_round_at_once(tiny_model, tmp_path):
    """SIGTERM during a re-fit: the round's child process is ended, not waited for."""
    marker = tmp_path / "started"
    script = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(120)"
    async with InferenceEngine(tiny_model, CPU) as engine:
        watcher = CheckpointWatcher(engine, tmp_path / "learned", loader)
        learner = Learner(lambda: [sys.executable, "-c", script], watcher, 24)
        round_ = asyncio.create_task(learner.learn_once())
        async with asyncio.timeout(60):
            while not marker.exists():
                await asyncio.sleep(0.05)
        started = time.monotonic()
        round_.cancel()
        with pytest.raises(asyncio.CancelledError):
            await round_
        assert time.monotonic() - started < 4


async def test_a_learned_head_without_its_base_says_what_to_give_instead(
    store, tiny_model, checkpoint, tmp_path, capsys
):
    await answers_that_teach(store, tiny_model, missed_tag(tiny_model, Scene.random(0)))
    out, db = tmp_path / "learned", tmp_path / "bot.sqlite3"
    assert await asyncio.to_thread(same_day_feedback_command, db, checkpoint, out) == 0
    (out / "base_head.safetensors").unlink()  # as heads learned before the base was kept
    capsys.readouterr()
    assert await asyncio.to_thread(same_day_feedback_command, db, out, out) == 2
    error = capsys.readouterr().err
    assert "without the base model it was learned on" in error and "--checkpoint BASE_DIR" in error


async def test_two_rounds_of_the_learner_after_a_forget_equal_a_world_without_that_person(
    tiny_model, tiny_clip_files, tmp_path
):
    config, weights = tiny_clip_files
    options = ["--model", config, "--pretrained", weights, "--device", "cpu"]

    async def learner_round(db, learned) -> None:
        async with InferenceEngine(tiny_model, CPU, version="zero-shot:tiny") as engine:
            watcher = CheckpointWatcher(engine, learned, loader)
            command = feedback_command_of(learned, options, ["--min-days", "1"], False)
            assert await Learner(command, watcher, 24, child_environment(str(db))).learn_once()

    forgot_db, never_db = tmp_path / "forgot.sqlite3", tmp_path / "never.sqlite3"
    forgot_dir, never_dir = tmp_path / "forgot-learned", tmp_path / "never-learned"
    for db, leave_out in ((forgot_db, ""), (never_db, "crew0")):
        store = await Store.open(db)
        await crew_answers(store, tiny_model, people=5, leave_out=leave_out)
        await store.close()
    await learner_round(forgot_db, forgot_dir)  # round 1 shares #ourcrew
    assert "ourcrew" in load_checkpoint(forgot_dir).spec.vocabulary
    store = await Store.open(forgot_db)
    async with InferenceEngine(tiny_model, CPU) as engine:
        assert await HashtagService(engine, store).forget(UserRef("telegram", "crew0"))
    await store.close()
    await learner_round(forgot_db, forgot_dir)  # round 2, judged against round 1's head
    await learner_round(never_db, never_dir)
    after, never = load_checkpoint(forgot_dir), load_checkpoint(never_dir)
    assert "ourcrew" not in after.spec.vocabulary
    assert after.spec.vocabulary == never.spec.vocabulary
    assert torch.equal(after.head.weight, never.head.weight)
    assert torch.equal(after.head.bias, never.head.bias)


async def popularity_answers(store, model, popular: bool, photos: int = 40, seed: int = 0):
    """Six people each type two hashtags per photo of its own scene: drawn by how often
    HARRISON's people use them (`popular`), or alike from the whole vocabulary."""
    vocabulary = model.spec.vocabulary
    weights = (
        np.exp(np.array(centred_log_prior(vocabulary))) if popular else np.ones(len(vocabulary))
    )
    rng = np.random.default_rng(seed)
    for i in range(photos):
        tags = rng.choice(len(vocabulary), 2, replace=False, p=weights / weights.sum())
        embedding = Scene.random(1000 + i).photo(rng)
        await answer(store, model, f"p{i % 6}", embedding, [vocabulary[t] for t in tags])


@pytest.mark.parametrize("popular", [True, False])
async def test_a_few_dozen_answers_say_how_much_popularity_counts(store, tiny_model, popular):
    await popularity_answers(store, tiny_model, popular)
    result = await refit(store, tiny_model)
    alpha = result.report["recalibration"]["prior_alpha"]
    assert tiny_model.spec.provenance["prior_alpha"] == DEFAULT_PRIOR_ALPHA  # where it starts
    if popular:  # a random model's picture says nothing: popularity is all there is to learn
        assert alpha > 0.4
    else:  # popularity says nothing about these answers
        assert abs(alpha) < 0.2
    assert result.model.spec.provenance["prior_alpha"] == alpha


async def test_too_few_people_leave_the_popularity_prior_as_it_was(store, tiny_model):
    vocabulary = tiny_model.spec.vocabulary
    for i in range(40):  # two people, forty answers of nothing but rare hashtags
        embedding = Scene.random(2000 + i).photo(np.random.default_rng(i))
        await answer(store, tiny_model, f"p{i % 2}", embedding, vocabulary[-3:])
    result = await refit(store, tiny_model)
    assert result.report["recalibration"] == {
        "scale": 1.0,
        "shift": 0.0,
        "prior_alpha": DEFAULT_PRIOR_ALPHA,
    }
