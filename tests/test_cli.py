"""`python -m inference`: output formats, exit statuses and error messages."""

import json
import os
import subprocess
import sys

import pytest

from inference.cli import main
from inference.loading import save_checkpoint
from tests.corpus import jpeg


@pytest.fixture
def model_args(tiny_clip_files):
    config_path, weights_path = tiny_clip_files
    return ["--model", config_path, "--pretrained", weights_path, "--device", "cpu"]


@pytest.fixture
def photos(tmp_path):
    paths = []
    for seed in range(3):
        path = tmp_path / f"photo{seed}.jpg"
        path.write_bytes(jpeg(seed=seed))
        paths.append(str(path))
    return paths


def test_json_lines_in_input_order_with_errors_inline(model_args, photos, tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    missing = str(tmp_path / "missing.jpg")
    status = main([*model_args, "--json", "--top-k", "4", photos[0], str(bad), missing, photos[1]])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert [line["image"] for line in lines] == [photos[0], str(bad), missing, photos[1]]
    assert "not an image" in lines[1]["error"] and "No such file" in lines[2]["error"]
    for line in (lines[0], lines[3]):
        assert len(line["hashtags"]) == 4
        scores = [h["score"] for h in line["hashtags"]]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)


def test_plain_output_is_one_line_of_hashtags_per_image(model_args, photos, capsys):
    assert main([*model_args, "--top-k", "3", *photos]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    for path, line in zip(photos, out, strict=True):
        name, tags = line.split(": ")
        assert name == path and len(tags.split()) == 3 and tags.startswith("#")


def test_plain_errors_go_to_stderr(model_args, tmp_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert main([*model_args, str(empty)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "empty" in captured.err


def test_checkpoint_directory_is_a_model_source(tiny_model, photos, tmp_path, capsys):
    save_checkpoint(tiny_model, tmp_path / "ckpt")
    assert main(["--checkpoint", str(tmp_path / "ckpt"), "--device", "cpu", photos[0]]) == 0
    assert capsys.readouterr().out.startswith(photos[0] + ": #")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--top-k", "0", "a.jpg"],
        ["--checkpoint", "ckpt", "--model", "ViT-B-32", "a.jpg"],
        ["--model", "ViT-B-32", "a.jpg"],
    ],
)
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


def test_unusable_model_exits_2_with_advice(photos, capsys):
    assert main(["--device", "cpu", photos[0]]) == 2  # default weights; offline in tests
    err = capsys.readouterr().err
    assert "not downloaded yet" in err and "Traceback" not in err


def test_cuda_requested_without_a_gpu_is_a_clear_error(model_args, photos, capsys):
    if sys.modules["torch"].cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main([*model_args[:-2], "--device", "cuda", photos[0]]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_python_dash_m_inference_runs_end_to_end(model_args, photos):
    result = subprocess.run(
        [sys.executable, "-m", "inference", *model_args, "--json", *photos],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["image"] for line in result.stdout.splitlines()] == photos
