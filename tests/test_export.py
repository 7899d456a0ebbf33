"""`python -m finetune export`: the ONNX graph computes what the torch model computes."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from finetune.cli import main
from inference.cli import main as inference_main
from inference.loading import save_checkpoint
from tests.corpus import jpeg


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ckpt")
    return tmp_path / "ckpt"


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
    photos = []
    for seed in range(4):
        photos.append(tmp_path / f"p{seed}.jpg")
        photos[-1].write_bytes(jpeg(seed=seed))
    capsys.readouterr()
    model = ["--checkpoint", str(checkpoint), *map(str, photos)]
    torch_tags = top_tags([*model, "--device", "cpu", "--backend", "torch"], capsys)
    assert top_tags([*model, "--backend", "onnx"], capsys) == torch_tags
    int8_tags = top_tags([*model, "--backend", "onnx", "--int8"], capsys)
    assert [tags[0] for tags in int8_tags] == [tags[0] for tags in torch_tags]
    assert list(checkpoint.glob("model.int8.*.onnx"))  # quantised once, kept for next time


def test_int8_stays_close_to_fp32(checkpoint):
    from inference.onnx_backend import load_onnx

    assert main(["export", "--checkpoint", str(checkpoint)]) == 0
    pixels = torch.randn(8, 3, 32, 32)
    _, fp32 = load_onnx(checkpoint)(pixels)
    _, int8 = load_onnx(checkpoint, int8=True)(pixels)
    cosine = torch.nn.functional.cosine_similarity(fp32, int8, dim=1)
    assert cosine.min() > 0.99, cosine


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--backend", "onnx"], "give --checkpoint"),
        (["--int8"], "--int8 applies to --backend onnx"),
    ],
)
def test_backend_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as caught:
        inference_main([*argv, "photo.jpg"])
    assert caught.value.code == 2 and says in capsys.readouterr().err


def test_a_checkpoint_without_its_onnx_graph_says_how_to_make_one(checkpoint, capsys):
    assert inference_main(["--checkpoint", str(checkpoint), "--backend", "onnx", "x.jpg"]) == 2
    assert "python -m finetune export" in capsys.readouterr().err


def test_auto_prefers_onnx_on_a_cpu_once_the_checkpoint_is_exported(checkpoint):
    from argparse import Namespace

    from inference.options import chosen_backend

    args = Namespace(backend="auto", checkpoint=checkpoint)
    cpu = torch.device("cpu")
    assert chosen_backend(args, cpu) == "torch"  # nothing exported yet
    assert main(["export", "--checkpoint", str(checkpoint)]) == 0
    assert chosen_backend(args, cpu) == "onnx"
    assert chosen_backend(args, torch.device("cuda")) == "torch"  # GPUs keep torch (fp16)
    assert chosen_backend(Namespace(backend="torch", checkpoint=checkpoint), cpu) == "torch"
