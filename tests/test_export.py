"""`python -m finetune export`: the ONNX graph computes what the torch model computes."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from finetune.cli import main
from inference.loading import save_checkpoint


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
