"""A checkpoint's config.json and weights come from whoever made them: each hostile or damaged
field is refused before anything is allocated, with exit status 2 and one line naming it."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from inference.cli import main
from inference.loading import save_checkpoint
from tests.corpus import jpeg

NAN = float("nan")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg(seed=1))
    return str(path)


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    directory = tmp_path / "ckpt"
    save_checkpoint(tiny_model, directory)
    return directory


def corrupt(checkpoint, change) -> None:
    """Rewrite config.json with `change(config)` applied, as a hostile editor would."""
    path = checkpoint / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))  # NaN is written as the NaN literal json.loads reads


def setting(*keys_and_value):
    """change(config) that sets config[k1][k2]... = value."""
    *keys, last, value = keys_and_value

    def change(config):
        for key in keys:
            config = config[key]
        config[last] = value

    return change


def serve(checkpoint, photo, capsys, *extra) -> tuple[int, str]:
    status = main(["--checkpoint", str(checkpoint), "--device", "cpu", *extra, photo])
    captured = capsys.readouterr()
    assert captured.out == ""
    return status, captured.err


VISION = ("model_cfg", "vision_cfg")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (setting("preprocess", "size", 30000), "preprocess.size"),  # 10.8 GB per photo
        (setting("preprocess", "size", "big"), "preprocess.size"),
        (setting("preprocess", "size", -5), "preprocess.size"),
        (setting("preprocess", "size", [224, "x"]), "preprocess.size"),
        (setting("preprocess", "size", True), "preprocess.size"),
        (setting("preprocess", "mean", "abc"), "preprocess.mean"),
        (setting("preprocess", "mean", [0.5, NAN, 0.5]), "preprocess.mean"),
        (setting("preprocess", "std", [0, 0, 0]), "preprocess.std"),
        (setting("preprocess", "interpolation", "nearest"), "preprocess.interpolation"),
        (setting("preprocess", "resize_mode", "crop"), "preprocess.resize_mode"),
        (setting("preprocess", "fill_color", 300), "preprocess.fill_color"),
        (setting("vocabulary", []), "vocabulary"),
        (setting("vocabulary", 0, 5), "vocabulary[0]"),
        (setting("vocabulary", 1, "x" * 10_000), "vocabulary[1]"),
        (setting("thresholds", [0.5]), "thresholds"),
        (lambda c: c.update(thresholds=[NAN] * len(c["vocabulary"])), "thresholds[0]"),
        (setting("model_cfg", "embed_dim", "32"), "model_cfg.embed_dim"),
        (setting(*VISION, "width", 10**9), "model_cfg.vision_cfg.width"),
        (setting(*VISION, "layers", 10_000), "model_cfg.vision_cfg.layers"),
        (setting(*VISION, "patch_size", 0), "model_cfg.vision_cfg.patch_size"),
        (
            setting(*VISION, "timm_model_name", "hf-hub:timm/vit_base_patch16_224"),
            "model_cfg.vision_cfg.timm_model_name",
        ),
        (
            setting(*VISION, "timm_model_pretrained", True),
            "model_cfg.vision_cfg.timm_model_pretrained",
        ),
        (setting("format_version", "one"), "format_version"),
        (setting("evil", 1), "evil"),
        (lambda c: c.pop("preprocess"), "preprocess is missing"),
    ],
)
def test_a_hostile_config_is_refused_in_one_line_naming_the_field(
    checkpoint, photo, capsys, change, field
):
    corrupt(checkpoint, change)
    status, err = serve(checkpoint, photo, capsys)
    assert status == 2
    assert err.startswith(f"error: {checkpoint / 'config.json'}: {field}"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "python -m finetune" in err  # what to do about it


def test_a_config_from_a_newer_version_says_to_upgrade(checkpoint, photo, capsys):
    corrupt(checkpoint, setting("format_version", 99))
    status, err = serve(checkpoint, photo, capsys)
    assert status == 2 and "format version 99" in err and "Upgrade" in err


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"[" * 100_000, b"\xff\xfe"])
def test_a_config_that_is_not_a_json_object_is_refused(checkpoint, photo, capsys, content):
    (checkpoint / "config.json").write_bytes(content)
    status, err = serve(checkpoint, photo, capsys)
    assert status == 2 and str(checkpoint / "config.json") in err
    assert len(err.splitlines()) == 1


def test_a_huge_model_claimed_by_config_is_checked_against_the_weights_first(
    checkpoint, photo, capsys
):
    """Within every bound, but 100 billion parameters (400 GB): refused from the weights
    file's header, before any of it is allocated (building it would end this test)."""
    corrupt(checkpoint, setting(*VISION, "width", 8192))
    corrupt(checkpoint, setting(*VISION, "layers", 128))
    status, err = serve(checkpoint, photo, capsys)
    assert status == 2 and "model.safetensors does not match config.json" in err, err
    assert len(err.splitlines()) == 1


def test_the_onnx_backend_checks_the_same_config(checkpoint, photo, capsys):
    (checkpoint / "model.onnx").write_bytes(b"not read: the config is refused first")
    corrupt(checkpoint, setting("preprocess", "size", 30000))
    status, err = serve(checkpoint, photo, capsys, "--backend", "onnx")
    assert status == 2 and "preprocess.size" in err and len(err.splitlines()) == 1


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-ran",))


@pytest.mark.parametrize("payload", ["code", "garbage", "list", "empty"])
def test_refused_weights_files_are_a_clear_error(tiny_clip_files, photo, tmp_path, payload):
    """A .pt that torch's weights_only loader refuses (code), or cannot be read as weights."""
    config_path, _ = tiny_clip_files
    weights = tmp_path / "weights.pt"
    if payload == "code":
        torch.save({"visual.proj": RunsCode()}, weights)
    elif payload == "garbage":
        weights.write_bytes(pickle.dumps("not weights")[:5])
    else:
        torch.save([] if payload == "list" else {}, weights)
    result = subprocess.run(
        [sys.executable, "-m", "inference", "--model", config_path, "--pretrained",
         str(weights), "--device", "cpu", "--backend", "torch", photo],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "this-ran" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"--pretrained {str(weights)!r}" in result.stderr
    if payload == "code":
        assert "nothing in it was run" in result.stderr


def test_python_dash_m_bot_refuses_a_hostile_checkpoint_with_exit_2(checkpoint, tmp_path):
    corrupt(checkpoint, setting("preprocess", "size", 30000))
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--console", "--checkpoint", str(checkpoint),
         "--device", "cpu", "--db", str(tmp_path / "bot.sqlite3")],
        input="quit\n", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "preprocess.size" in lines[0], lines
