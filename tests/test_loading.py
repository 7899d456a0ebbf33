"""Building the model from open_clip weights, caching its head, and checkpoint round trips."""

import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import replace

import open_clip
import pytest
import torch

from inference import zeroshot
from inference.loading import load_checkpoint, load_zero_shot, save_checkpoint
from inference.model import HashtagModel
from inference.spec import ModelLoadError
from inference.vocab import VocabularyError, load_vocabulary, parse_vocabulary
from tests.corpus import jpeg

VOCAB = ["beach", "sunset", "dog", "food", "selfie"]


def test_harrison_vocabulary_ships_with_the_package():
    vocabulary = load_vocabulary()
    assert len(vocabulary) == 997
    assert vocabulary[:3] == ["love", "friend", "beach"]


def test_vocabulary_files_take_the_first_word_and_skip_duplicates(tmp_path):
    assert parse_vocabulary("#Beach 0\nsunset\t1\n\nbeach 2\n") == ["beach", "sunset"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(VocabularyError, match="no hashtags"):
        load_vocabulary(empty)
    with pytest.raises(VocabularyError, match="does not exist"):
        load_vocabulary(tmp_path / "missing.txt")


def test_zero_shot_head_rows_are_the_hashtag_text_embeddings(tiny_clip_files, tmp_path):
    config_path, weights_path = tiny_clip_files
    model = load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path)
    assert model.spec.vocabulary == VOCAB
    assert not hasattr(model, "text") and not hasattr(model, "transformer")

    clip_model = open_clip.create_model("tiny-test-clip", pretrained=weights_path)
    tokenizer = open_clip.get_tokenizer("tiny-test-clip")
    with torch.no_grad():
        prompts = tokenizer([t.format("sunset") for t in zeroshot.HASHTAG_TEMPLATES])
        expected = torch.nn.functional.normalize(clip_model.encode_text(prompts), dim=-1).mean(0)
    expected = torch.nn.functional.normalize(expected, dim=0)
    row = torch.nn.functional.normalize(model.head.weight[1], dim=0)
    torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-4)


def test_the_second_start_reads_the_head_from_the_cache(tiny_clip_files, tmp_path, monkeypatch):
    config_path, weights_path = tiny_clip_files
    first = load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path)
    assert len(list((tmp_path / "zero_shot_heads").glob("*.safetensors"))) == 1

    def must_not_build(*args, **kwargs):
        raise AssertionError("the cached head should have been used")

    monkeypatch.setattr(zeroshot, "build_zero_shot_head", must_not_build)
    second = load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path)
    torch.testing.assert_close(first.head.weight, second.head.weight)
    with pytest.raises(AssertionError, match="cached head"):  # another vocabulary: a new key
        load_zero_shot(config_path, weights_path, [*VOCAB, "cat"], cache_dir=tmp_path)


def test_with_the_head_cached_only_the_vision_tower_is_built_with_the_same_scores(
    tiny_clip_files, tmp_path, monkeypatch
):
    config_path, weights_path = tiny_clip_files
    full = load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path)  # builds the head

    def no_full_clip(*args, **kwargs):
        raise AssertionError("the whole CLIP (text tower included) should not be built")

    monkeypatch.setattr(open_clip, "create_model", no_full_clip)
    lean = load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path)
    assert lean.spec == full.spec
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for expected, actual in zip(full(pixels), lean(pixels), strict=True):
            torch.testing.assert_close(actual, expected)
    total = sum(p.numel() for p in lean.parameters())
    assert total == sum(p.numel() for p in full.visual.parameters()) + lean.head.weight.numel() + 5


def test_the_first_start_reads_each_tower_on_its_own_with_the_same_scores(
    tiny_clip_files, tmp_path, monkeypatch, caplog
):
    """A .pt file goes through open_clip's loader (the whole CLIP and a second copy of its
    weights); safetensors are read tower by tower, and must give the very same model."""
    config_path, weights_path = tiny_clip_files
    clip_model = open_clip.create_model("tiny-test-clip", pretrained=weights_path)
    pt_path = tmp_path / "weights.pt"
    torch.save(clip_model.state_dict(), pt_path)
    reference = load_zero_shot(config_path, str(pt_path), VOCAB, cache_dir=tmp_path / "pt")

    def whole_file(*args, **kwargs):
        raise AssertionError("the whole weights file should not be loaded at once")

    monkeypatch.setattr(open_clip.factory, "load_checkpoint", whole_file)
    with caplog.at_level(logging.WARNING):
        lean = load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path / "st")
    assert "initialized randomly" not in caplog.text  # open_clip's warning would mislead
    torch.testing.assert_close(lean.head.weight, reference.head.weight)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for expected, actual in zip(reference(pixels), lean(pixels), strict=True):
            torch.testing.assert_close(actual, expected)


def test_a_damaged_cache_entry_is_rebuilt(tiny_clip_files, tmp_path):
    config_path, weights_path = tiny_clip_files
    load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path)
    (cache_file,) = (tmp_path / "zero_shot_heads").glob("*.safetensors")
    cache_file.write_bytes(b"garbage")
    model = load_zero_shot(config_path, weights_path, VOCAB, cache_dir=tmp_path)
    assert model.head.weight.shape == (len(VOCAB), 32)


def test_checkpoint_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    thresholds = [0.25 + i / 4000 for i in range(len(tiny_model.spec.vocabulary))]
    spec = replace(tiny_model.spec, thresholds=thresholds, provenance={"run": "test"})
    model = HashtagModel(tiny_model.visual, tiny_model.head, spec)
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.spec == spec
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), model(pixels))


def test_checkpoint_errors_say_what_is_missing(tiny_model, tmp_path):
    with pytest.raises(ModelLoadError, match=r"config\.json is missing"):
        load_checkpoint(tmp_path)
    save_checkpoint(tiny_model, tmp_path)
    # A pickle where safetensors belong is refused, never unpickled.
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps({"head.weight": 1}))
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load_checkpoint(tmp_path)


def test_unknown_model_and_weights_get_actionable_errors(tiny_clip_files, tmp_path):
    config_path, _ = tiny_clip_files
    with pytest.raises(ModelLoadError, match="unknown model 'ViT-Nope'"):
        load_zero_shot("ViT-Nope", "openai", VOCAB)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_zero_shot(str(tmp_path / "missing.json"), "x", VOCAB)
    with pytest.raises(ModelLoadError, match="not a known tag"):
        load_zero_shot(config_path, str(tmp_path / "no-such-weights.safetensors"), VOCAB)


def test_missing_download_is_a_clear_error():
    # conftest sets HF_HUB_OFFLINE=1: huggingface_hub fails at once, with no network traffic.
    with pytest.raises(ModelLoadError, match="not downloaded yet") as caught:
        load_zero_shot("ViT-B-32", "laion2b_s34b_b79k", VOCAB)
    assert "HF_HUB_OFFLINE" in str(caught.value) and "--pretrained /path/to" in str(caught.value)


def test_without_a_network_the_first_start_fails_at_once_in_one_line(tmp_path):
    """The Hub client's retries (about 50 s, each logged twice) must not run: one probe decides.

    "No network" is a closed port on 127.0.0.1 standing in for the Hub, so no traffic leaves.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port}",
        "HF_HOME": str(tmp_path / "hf"),
        "HASHTAG_CACHE_DIR": str(tmp_path / "cache"),
        "LOG_LEVEL": "INFO",
    }
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg())
    for command in (["inference", "--device", "cpu", str(photo)], ["bot", "--console"]):
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", *command], env=env, capture_output=True, text=True, timeout=120
        )
        assert time.perf_counter() - start < 20, "it waited on retries"
        assert run.returncode == 2, run.stderr
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "cannot be reached" in lines[0] and "--pretrained /path/to" in lines[0]


def test_weights_in_the_hub_cache_need_no_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from inference.hub import ensure_downloadable

    snapshot = tmp_path / "models--org--clip" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (tmp_path / "models--org--clip" / "refs").mkdir()
    (tmp_path / "models--org--clip" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    ensure_downloadable("ViT-B-32", "tag", {"hf_hub": "org/clip/"})  # no probe, no error
    with pytest.raises(ModelLoadError, match="not downloaded yet"):  # HF_HUB_OFFLINE=1 here
        ensure_downloadable("ViT-B-32", "tag", {"hf_hub": "org/other/"})


def test_head_building_skips_the_text_padding(tiny_clip_files):
    # The equality of trimmed and full-length embeddings is checked above; this checks that the
    # fast path is really taken for CLIP text towers, and undone afterwards.
    _, weights_path = tiny_clip_files
    clip_model = open_clip.create_model("tiny-test-clip", pretrained=weights_path)
    with zeroshot._text_context_trimmed_to(clip_model, 12) as trimmed:
        assert trimmed and clip_model.positional_embedding.shape[0] == 12
    assert clip_model.positional_embedding.shape[0] == 77
    assert clip_model.attn_mask.shape == (77, 77)
