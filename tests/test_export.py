"""`python -m finetune export`: the ONNX graph computes what the torch model computes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from finetune.cli import main
from inference.cli import main as inference_main
from inference.first_start import main as first_start_main
from inference.loading import save_checkpoint
from inference.options import EXIT_EXPORT_FAILED
from tests.corpus import jpeg


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def photo_file(folder: Path, seed: int) -> Path:
    photo = folder / f"photo-{seed}.jpg"
    photo.write_bytes(jpeg(seed=seed))
    return photo


def test_the_onnx_graph_matches_torch_at_any_batch_size(tiny_model, checkpoint, capsys):
    assert main(["export", "--checkpoint", str(checkpoint)]) == 0
    assert "model.onnx" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(
        str(checkpoint / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    for batch in (1, 5):  # exported with batch 2: the batch axis must be dynamic
        pixels = torch.randn(batch, 3, 32, 32)
        logits, embedding = session.run(None, {"pixels": pixels.numpy()})
        with torch.no_grad():
            expected_logits, expected_embedding = tiny_model(pixels)
        assert np.abs(logits - expected_logits.numpy()).max() < 1e-4
        assert np.abs(embedding - expected_embedding.numpy()).max() < 1e-4


def test_the_vocabulary_travels_in_the_metadata(tiny_model, checkpoint, tmp_path):
    out = tmp_path / "elsewhere.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out)]) == 0
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert metadata["vocabulary"] == tiny_model.spec.vocabulary
    assert metadata["preprocess"]["size"] == [32, 32]


def test_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def top_tags(argv: list[str], capsys) -> list[list[str]]:
    assert inference_main([*argv, "--json", "--top-k", "5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [[h["tag"] for h in line["hashtags"]] for line in lines]


def test_backend_onnx_serves_the_same_hashtags_as_torch(checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(checkpoint)]) == 0
    photos = [photo_file(tmp_path, seed) for seed in range(4)]
    capsys.readouterr()
    model = ["--checkpoint", str(checkpoint), *map(str, photos)]
    torch_tags = top_tags([*model, "--device", "cpu", "--backend", "torch"], capsys)
    assert top_tags([*model, "--backend", "onnx"], capsys) == torch_tags
    int8_tags = top_tags([*model, "--backend", "onnx", "--int8"], capsys)
    assert [tags[0] for tags in int8_tags] == [tags[0] for tags in torch_tags]
    assert list(checkpoint.glob("engines/onnx-int8.*/model.onnx"))  # quantised once, kept


def test_int8_stays_close_to_fp32(checkpoint):
    from inference.backends.onnx_runtime import load_onnx

    assert main(["export", "--checkpoint", str(checkpoint)]) == 0
    pixels = np.random.default_rng(0).standard_normal((8, 3, 32, 32), np.float32)
    _, fp32 = load_onnx(checkpoint)(pixels)
    _, int8 = load_onnx(checkpoint, int8=True)(pixels)
    cosine = (fp32 * int8).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() > 0.99, cosine


def test_int8_without_the_onnx_backend_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        inference_main(["--int8", "photo.jpg"])
    assert caught.value.code == 2 and "--int8 applies to --backend onnx" in capsys.readouterr().err


def test_a_checkpoint_without_its_onnx_graph_says_how_to_make_one(checkpoint, capsys):
    assert inference_main(["--checkpoint", str(checkpoint), "--backend", "onnx", "x.jpg"]) == 2
    assert "python -m finetune export" in capsys.readouterr().err


def test_auto_serves_the_export_on_a_cpu_once_the_checkpoint_is_exported(checkpoint):
    from argparse import Namespace

    from inference.options import chosen_backend

    args = Namespace(backend="auto", checkpoint=checkpoint)
    cpu = "cpu"
    assert chosen_backend(args, cpu) == "torch"  # nothing exported yet
    assert main(["export", "--checkpoint", str(checkpoint)]) == 0
    assert chosen_backend(args, cpu) == "auto"  # the engine measured fastest on this CPU
    assert chosen_backend(args, "cuda") == "torch"  # GPUs keep torch (fp16)
    assert chosen_backend(Namespace(backend="torch", checkpoint=checkpoint), cpu) == "torch"


# Run as `python -c`: blocks torch and everything built on it, then runs a command's main().
WITHOUT_TORCH = """
import sys
for name in ("torch", "torchvision", "open_clip", "timm"):
    sys.modules[name] = None  # any import of them now raises ImportError
from {module} import main
sys.exit(main(sys.argv[1:]))
"""


def without_torch(module: str, args: list[str], **options) -> subprocess.CompletedProcess:
    script = WITHOUT_TORCH.format(module=module)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        **{"timeout": 120, **options},
    )


@pytest.fixture
def zero_shot(tiny_clip_files, tmp_path, monkeypatch) -> tuple[list[str], Path]:
    """(options naming the tiny zero-shot model, the cache folder of its own it uses; the
    environment carries it, so subprocesses use it too)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HASHTAG_CACHE_DIR", str(cache))
    config, weights = tiny_clip_files
    return ["--model", config, "--pretrained", weights], cache


@pytest.fixture(params=["checkpoint", "zero-shot"])
def exported(request, checkpoint, tmp_path) -> list[str]:
    """The options naming an exported model: a checkpoint after `python -m finetune export`, or
    the zero-shot model after its first start on a CPU, which exports it into the cache."""
    if request.param == "checkpoint":
        assert main(["export", "--checkpoint", str(checkpoint)]) == 0
        return ["--checkpoint", str(checkpoint)]
    options, cache = request.getfixturevalue("zero_shot")
    # Even the first start serves without torch: a child process of its own exports the model.
    photo = photo_file(tmp_path, 9)
    first = without_torch("inference.cli", [*options, "--device", "cpu", str(photo)])
    assert first.returncode == 0, first.stderr
    assert len(list(cache.glob("zero_shot_onnx/*/model.onnx"))) == 1
    return options


def test_serving_onnx_never_imports_torch(exported, tmp_path, capsys):
    """torch with its CUDA libraries is most of a process's memory: the lean bot needs none."""
    photos = [photo_file(tmp_path, seed) for seed in range(3)]
    # `auto` must find the CPU without torch too, wherever no NVIDIA driver is loaded.
    device = [] if not Path("/proc/driver/nvidia/version").exists() else ["--device", "cpu"]
    lean = without_torch("inference.cli", [*exported, "--json", *device, *map(str, photos)])
    assert lean.returncode == 0, lean.stderr  # the engine chosen for this CPU
    capsys.readouterr()
    assert inference_main([*exported, "--backend", "torch", "--json", *map(str, photos)]) == 0
    with_torch = capsys.readouterr().out
    for ours, theirs in zip(lean.stdout.splitlines(), with_torch.splitlines(), strict=True):
        top5 = [{t["tag"] for t in json.loads(line)["hashtags"][:5]} for line in (ours, theirs)]
        assert len(top5[0] & top5[1]) >= 4  # bf16 or int8 may swap the fifth and sixth
    # ONNX Runtime fp32, the reference every faster engine is checked against: torch's scores.
    fp32 = [*exported, "--backend", "onnx", "--json", *device, *map(str, photos)]
    lean = without_torch("inference.cli", fp32)
    assert lean.returncode == 0, lean.stderr
    for ours, theirs in zip(lean.stdout.splitlines(), with_torch.splitlines(), strict=True):
        ours = {t["tag"]: t["score"] for t in json.loads(ours)["hashtags"]}
        theirs = {t["tag"]: t["score"] for t in json.loads(theirs)["hashtags"]}
        # The same scores (ties may order differently): the same pixels went into the same net.
        np.testing.assert_allclose(sorted(ours.values()), sorted(theirs.values()), atol=2e-4)
        assert all(abs(ours[tag] - theirs[tag]) <= 2e-4 for tag in ours.keys() & theirs.keys())
        assert len(ours.keys() & theirs.keys()) >= len(ours) - 2

    console = without_torch(
        "bot.cli",
        ["--console", *exported, "--db", str(tmp_path / "bot.sqlite3"), *device],
        input=f"{photos[0]}\ny 1\nquit\n",
    )
    assert console.returncode == 0, console.stderr
    assert "Saved: #" in console.stdout


def test_the_first_start_child_reports_an_exporter_failure(zero_shot, tmp_path, monkeypatch):
    def exporter_fails(*args, **kwargs):
        raise RuntimeError("exporter says no")

    monkeypatch.setattr("inference.backends.export.export_onnx", exporter_fails)
    model, cache = zero_shot
    report, destination = tmp_path / "report.txt", cache / "export"
    status = first_start_main([*model, "--report", str(report), str(destination)])
    assert status == EXIT_EXPORT_FAILED  # torch can still serve: the parent may fall back
    assert report.read_text() == "RuntimeError: exporter says no"
    assert not destination.exists() and not list(cache.glob(".export*"))  # no staging left
    # A model that cannot be loaded at all is the other status, with the reason to show.
    missing = ["--model", model[1], "--pretrained", str(tmp_path / "none.safetensors")]
    assert first_start_main([*missing, "--report", str(report), str(destination)]) == 2
    assert "not a known tag" in report.read_text()


def test_the_zero_shot_model_falls_back_to_torch_when_it_cannot_be_exported(
    zero_shot, tmp_path, monkeypatch, caplog, capsys
):
    model, _ = zero_shot
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HASHTAG_CACHE_DIR", str(blocker / "cache"))  # nothing can be written
    options = [*model, "--device", "cpu"]
    photo = photo_file(tmp_path, 1)
    assert inference_main([*options, str(photo)]) == 0  # served with torch instead
    assert "#" in capsys.readouterr().out
    assert "Not a directory" in caplog.text and "serving it with torch" in caplog.text
    # Asked for ONNX explicitly, it is an error that says what to do.
    assert inference_main([*options, "--backend", "onnx", str(photo)]) == 2
    error = capsys.readouterr().err
    assert "Not a directory" in error and "--backend torch" in error


def test_a_first_start_killed_for_memory_says_how_much_it_needs(
    zero_shot, tmp_path, monkeypatch, capsys
):
    killed = tmp_path / "killed-python"
    killed.write_text("#!/bin/sh\nkill -9 $$\n")  # the out-of-memory killer's way
    killed.chmod(0o755)
    monkeypatch.setattr("inference.options.sys.executable", str(killed))
    model, _ = zero_shot
    assert inference_main([*model, "--device", "cpu", str(photo_file(tmp_path, 1))]) == 2
    error = capsys.readouterr().err
    assert "stopped by signal 9" in error and "1.4 GB of memory" in error


def test_a_damaged_zero_shot_export_is_made_again(zero_shot, tmp_path, caplog, capsys):
    model, cache = zero_shot
    options = [*model, "--device", "cpu", "--backend", "onnx"]  # the same engine both times
    photo = photo_file(tmp_path, 2)
    assert inference_main([*options, str(photo)]) == 0
    first = capsys.readouterr().out
    (data,) = cache.glob("zero_shot_onnx/*/model.onnx.data")
    data.write_bytes(data.read_bytes()[:1000])  # cut off, as by a full disk
    assert inference_main([*options, str(photo)]) == 0
    assert capsys.readouterr().out == first
    assert "the cached export is damaged" in caplog.text
    assert data.stat().st_size > 1000


def test_a_damaged_onnx_graph_is_a_clear_error(checkpoint, capsys):
    assert main(["export", "--checkpoint", str(checkpoint)]) == 0
    (checkpoint / "model.onnx").write_bytes(b"not a graph")
    assert inference_main(["--checkpoint", str(checkpoint), "--backend", "onnx", "x.jpg"]) == 2
    error = capsys.readouterr().err
    assert "cannot load" in error and "model.onnx" in error and "python -m finetune export" in error
