"""The CPU engine is chosen by measurement, checked against fp32, and remembered per CPU."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import inference.backends.choice as choice
from finetune.cli import main as finetune_main
from inference.backends.calibration import MIN_COSINE, calibration_batch, calibration_photos
from inference.backends.choice import (
    CHOICE_FILE,
    ENGINES,
    REFERENCE,
    Engine,
    cached_decision,
    decide,
    decision_for,
    load_engine,
)
from inference.backends.onnx_runtime import load_onnx
from inference.cli import main as inference_main
from inference.loading import save_checkpoint
from inference.spec import ModelSpec
from tests.corpus import jpeg
from tests.test_export import without_torch


@pytest.fixture(scope="module")
def exported(tiny_clip_files, tmp_path_factory) -> Path:
    """A checkpoint after `python -m finetune export`, made once: tests copy it."""
    from inference.loading import load_zero_shot
    from inference.vocab import load_vocabulary

    folder = tmp_path_factory.mktemp("exported") / "ckpt"
    save_checkpoint(load_zero_shot(*tiny_clip_files, load_vocabulary()), folder)
    assert finetune_main(["export", "--checkpoint", str(folder)]) == 0
    return folder


@pytest.fixture
def checkpoint(exported, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(exported, tmp_path / "ckpt"))


def noisy(name: str, noise: float) -> Engine:
    """ONNX Runtime fp32 with noise added to what it returns: an engine that disagrees."""

    def load(directory):
        model = load_onnx(directory)
        run, rng = model._run, np.random.default_rng(0)

        def perturbed(pixels):
            logits, embeddings = run(pixels)
            return (
                logits + rng.normal(0, noise, logits.shape),
                embeddings + rng.normal(0, noise, embeddings.shape),
            )

        model._run, model.engine = perturbed, name
        return model

    return Engine(name, load)


def test_an_engine_that_disagrees_with_fp32_is_refused(checkpoint):
    decision = decide(checkpoint, [noisy("wrong", 0.5), noisy("faithful", 0.0)])
    wrong, faithful = decision.trials["wrong"], decision.trials["faithful"]
    assert not wrong.accepted and wrong.min_cosine < MIN_COSINE
    assert faithful.accepted and faithful.top5_agreement == 1.0  # the check can pass
    assert decision.engine in (REFERENCE, "faithful")
    assert "refused: wrong (disagrees with fp32)" in decision.describe()


def test_the_fastest_agreeing_engine_is_taken_and_its_batch_size(checkpoint, monkeypatch):
    """Made fast by its measurement alone: wrong engines stay refused however fast they are."""
    rates = {REFERENCE: 10.0, "quick": 40.0, "quicker-but-wrong": 90.0}
    real = choice._measure

    def measure(model, pixels):
        _, outputs = real(model, pixels)
        rate = rates[model.engine]
        return {"1": rate / 4, "8": rate, "32": rate * 1.05}, outputs

    monkeypatch.setattr(choice, "_measure", measure)
    decision = decide(checkpoint, [noisy("quick", 0.0), noisy("quicker-but-wrong", 0.5)])
    assert decision.engine == "quick"
    assert decision.batch_size == 8  # 32 is not 10% faster: the smaller batch is kept


def test_a_decision_is_kept_reused_and_made_again_on_another_cpu(checkpoint, monkeypatch):
    children = []

    def child(command, **options):  # the child's own code, in this process, counted
        children.append(command)
        return subprocess.CompletedProcess(command, choice.main([command[-1]]))

    monkeypatch.setattr(choice.subprocess, "run", child)
    first = decision_for(checkpoint)
    assert len(children) == 1 and (checkpoint / CHOICE_FILE).is_file()
    assert decision_for(checkpoint) == first and len(children) == 1  # reused
    monkeypatch.setattr(choice, "cpu_signature", lambda: ("another-cpu", "Another CPU"))
    decision_for(checkpoint)
    assert len(children) == 2  # decided again, and both are kept
    kept = json.loads((checkpoint / CHOICE_FILE).read_text())["decisions"]
    assert len(kept) == 2 and kept["another-cpu"]["cpu"] == "Another CPU"


def test_a_re_exported_graph_is_decided_again(checkpoint):
    choice.keep_decision(checkpoint, decide(checkpoint, [ENGINES[REFERENCE]]))
    assert cached_decision(checkpoint) is not None
    assert finetune_main(["export", "--checkpoint", str(checkpoint)]) == 0
    assert cached_decision(checkpoint) is None  # made for the graph that was replaced


def test_an_unreadable_decision_is_made_again_with_a_warning(checkpoint, caplog):
    (checkpoint / CHOICE_FILE).write_text("{not json")
    assert cached_decision(checkpoint) is None
    assert "deciding the CPU engine again" in caplog.text
    model = load_engine(checkpoint)  # a real child process measures again
    assert model.engine in ENGINES and cached_decision(checkpoint).engine == model.engine


@pytest.mark.parametrize("engine", ["onnx-int8", "openvino-bf16"])
def test_a_broken_engine_file_is_made_again_with_a_warning(checkpoint, engine, caplog):
    if not ENGINES[engine].available():
        pytest.skip(f"{engine} does not run on this CPU")
    pixels = calibration_batch(ModelSpec.from_file(checkpoint / "config.json"))[:4]
    before = load_engine(checkpoint, engine)(pixels)
    (made,) = checkpoint.glob(f"engines/{engine}.*")
    for file in made.iterdir():
        file.write_bytes(file.read_bytes()[:100])  # cut off, as by a full disk
    after = load_engine(checkpoint, engine)(pixels)
    assert "do not load" in caplog.text and "making them again" in caplog.text
    np.testing.assert_allclose(after[1], before[1], atol=1e-5)


def test_a_chosen_engine_that_will_not_load_leaves_fp32_serving(checkpoint, monkeypatch, caplog):
    decision = decide(checkpoint, [noisy("faithful", 0.0)])
    decision.engine = "openvino"
    choice.keep_decision(checkpoint, decision)

    def broken(directory):
        raise RuntimeError("the runtime's library is missing")

    monkeypatch.setitem(ENGINES, "openvino", Engine("openvino", broken))
    model = load_engine(checkpoint)
    assert model.engine == REFERENCE
    assert "the chosen CPU engine openvino does not load" in caplog.text


def test_deciding_never_imports_torch(checkpoint):
    done = without_torch("inference.backends.choice", [str(checkpoint)], timeout=300)
    assert done.returncode == 0, done.stderr
    assert cached_decision(checkpoint) is not None


def top5_sets(options: list[str], photos: list[Path], capsys) -> list[set[str]]:
    capsys.readouterr()
    assert inference_main([*options, "--json", *map(str, photos)]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [{tag["tag"] for tag in json.loads(line)["hashtags"][:5]} for line in lines]


def test_every_engine_can_be_forced_and_the_default_keeps_torchs_hashtags(
    checkpoint, tmp_path, capsys
):
    photos = []
    for seed in range(40):
        photos.append(tmp_path / f"photo-{seed}.jpg")
        photos[-1].write_bytes(jpeg(seed=seed))
    options = ["--checkpoint", str(checkpoint), "--device", "cpu"]
    torch_tags = top5_sets([*options, "--backend", "torch"], photos, capsys)
    for engine in ENGINES:
        if ENGINES[engine].available():
            forced = top5_sets([*options, "--backend", engine], photos, capsys)
            assert len(forced) == len(photos)
    default = top5_sets(options, photos, capsys)  # whichever engine this CPU chose
    same = sum(ours == theirs for ours, theirs in zip(default, torch_tags, strict=True))
    assert same >= 0.95 * len(photos), cached_decision(checkpoint).describe()


def test_the_calibration_photos_are_varied_and_always_the_same(checkpoint):
    photos = calibration_photos(8)
    assert photos == calibration_photos(8) and len(set(photos)) == 8
    pixels = calibration_batch(ModelSpec.from_file(checkpoint / "config.json"), 8)
    flat = pixels.reshape(8, -1)
    correlation = np.corrcoef(flat)[np.triu_indices(8, 1)]
    assert correlation.max() < 0.95  # no two photos alike
