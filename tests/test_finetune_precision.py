"""The embedding pass's precision: bf16 only where it measures faster and agrees with fp32."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from finetune import precision
from finetune.cli import main
from finetune.embeddings import embed_images
from finetune.precision import EmbeddingPrecision, choose_embedding_dtype
from tests.corpus import jpeg
from tests.synthetic_harrison import write_synthetic_harrison
from tests.test_finetune import tiny_run

CPU = torch.device("cpu")


def fake_clock(monkeypatch, fp32_seconds: float, bf16_seconds: float) -> None:
    """The passes really run (their embeddings are compared); only their timings are set."""
    real = precision.timed_pass
    seconds = {"fp32": fp32_seconds, "bf16": bf16_seconds}

    def timed(name, embed, pixels, batch_size):
        embeddings, _ = real(name, embed, pixels, batch_size)
        return embeddings, seconds[name]

    monkeypatch.setattr(precision, "timed_pass", timed)


class Noisy(nn.Module):
    """A bf16 vision tower whose output is pushed off fp32's, as a broken bf16 kernel would."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.visual(pixels)
        noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        return out + 0.2 * out.norm(dim=-1, keepdim=True) * noise.to(out.dtype)


def no_measuring(*args, **kwargs):
    raise AssertionError("the precision was given: nothing should be measured")


def test_bf16_is_chosen_when_faster_and_in_agreement(tiny_model, monkeypatch, caplog):
    fake_clock(monkeypatch, fp32_seconds=2.0, bf16_seconds=1.0)
    with caplog.at_level(logging.INFO, logger="finetune.precision"):
        assert choose_embedding_dtype(tiny_model, CPU, batch_size=32) == torch.bfloat16
    (line,) = caplog.messages
    assert line.startswith("embedding in bf16: 2.0x faster than fp32 on this CPU, cosine >= 0.99")
    assert "same top-5 on 100% of 32 calibration photos" in line
    assert next(tiny_model.parameters()).dtype == torch.float32  # measured on a copy


def test_bf16_is_refused_when_its_hashtags_differ(tiny_model, monkeypatch, caplog):
    fake_clock(monkeypatch, fp32_seconds=2.0, bf16_seconds=1.0)  # fast: only the noise refuses
    real_copy = precision.cast_copy

    def noisy_copy(visual: nn.Module, dtype: torch.dtype) -> nn.Module:
        return Noisy(real_copy(visual, dtype))

    monkeypatch.setattr(precision, "cast_copy", noisy_copy)
    with caplog.at_level(logging.INFO, logger="finetune.precision"):
        assert choose_embedding_dtype(tiny_model, CPU, batch_size=32) == torch.float32
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.message.startswith("embedding in fp32: bf16 refused, its hashtags differ")
    assert "though 2.0x as fast" in record.message


@pytest.mark.parametrize("bf16_seconds", [2.0, 1.8, 4.0])  # as fast, 1.11x, twice as slow
def test_bf16_is_refused_when_not_measurably_faster(tiny_model, monkeypatch, caplog, bf16_seconds):
    fake_clock(monkeypatch, fp32_seconds=2.0, bf16_seconds=bf16_seconds)
    with caplog.at_level(logging.INFO, logger="finetune.precision"):
        assert choose_embedding_dtype(tiny_model, CPU, batch_size=32) == torch.float32
    (line,) = caplog.messages
    ratio = 2.0 / bf16_seconds
    assert line.startswith(f"embedding in fp32: bf16 refused, {ratio:.1f}x as fast as fp32")
    assert "same top-5 on 100%" in line  # it agreed: speed alone refused it


def test_embeddings_in_accepted_bf16_agree_with_fp32(tiny_model, tmp_path, monkeypatch):
    paths = []
    for seed in range(40):
        paths.append(tmp_path / f"{seed}.jpg")
        paths[-1].write_bytes(jpeg(seed=seed))
    paths.append(tmp_path / "broken.jpg")
    paths[-1].write_bytes(b"\xff\xd8 not a JPEG")
    fp32, readable_fp32 = embed_images(tiny_model, paths, batch_size=16, workers=0)

    fake_clock(monkeypatch, fp32_seconds=2.0, bf16_seconds=1.0)
    casts = []
    real_copy = precision.cast_copy

    def recorded_copy(visual: nn.Module, dtype: torch.dtype) -> nn.Module:
        casts.append(dtype)
        return real_copy(visual, dtype)

    monkeypatch.setattr(precision, "cast_copy", recorded_copy)
    auto = EmbeddingPrecision("auto")
    bf16, readable = embed_images(tiny_model, paths, batch_size=16, workers=0, precision=auto)

    assert casts == [torch.bfloat16, torch.bfloat16]  # the measurement's copy, then the pass's
    assert bf16.dtype == np.float32 and (readable == readable_fp32).all() and readable.sum() == 40
    cosine = (bf16[readable] * fp32[readable]).sum(axis=1)  # both are unit vectors
    assert cosine.min() >= 0.999
    assert not np.array_equal(bf16, fp32)  # it really ran in bf16
    assert np.allclose(np.linalg.norm(bf16[readable], axis=1), 1, atol=1e-5)


def test_a_given_precision_is_used_without_measuring(tiny_model, monkeypatch):
    monkeypatch.setattr(precision, "measure_bf16", no_measuring)
    assert EmbeddingPrecision("fp32").dtype(tiny_model, 32) == torch.float32
    assert EmbeddingPrecision("bf16").dtype(tiny_model, 32) == torch.bfloat16
    with pytest.raises(ValueError, match="one of"):
        EmbeddingPrecision("fp16")


def test_a_gpu_keeps_the_models_precision_without_measuring(tiny_model, monkeypatch):
    monkeypatch.setattr(precision, "measure_bf16", no_measuring)
    assert choose_embedding_dtype(tiny_model, torch.device("cuda"), 128) == torch.float32


def test_nothing_is_measured_when_every_embedding_is_cached(tiny_model, tmp_path, monkeypatch):
    paths = [tmp_path / f"{seed}.jpg" for seed in range(3)]
    for seed, path in enumerate(paths):
        path.write_bytes(jpeg(seed=seed))
    cache = tmp_path / "cache"
    first, _ = embed_images(tiny_model, paths, batch_size=4, workers=0, cache_folder=cache)
    monkeypatch.setattr(precision, "measure_bf16", no_measuring)
    again, _ = embed_images(
        tiny_model,
        paths,
        batch_size=4,
        workers=0,
        cache_folder=cache,
        precision=EmbeddingPrecision("auto"),
    )
    assert np.array_equal(first, again)


def test_the_measurement_runs_once_per_run(tiny_model, monkeypatch):
    calls = []
    real = precision.measure_bf16

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(precision, "measure_bf16", counted)
    chosen = EmbeddingPrecision("auto")
    assert chosen.dtype(tiny_model, 32) == chosen.dtype(tiny_model, 32)
    assert len(calls) == 1


@pytest.mark.parametrize("given", ["fp32", "bf16"])
def test_the_command_line_option_forces_the_precision(
    tmp_path, tiny_clip_files, monkeypatch, given
):
    monkeypatch.setenv("HASHTAG_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached yet
    write_synthetic_harrison(tmp_path / "data", count=60, seed=4)
    monkeypatch.setattr(precision, "measure_bf16", no_measuring)
    dtypes = []
    real_embedder = precision.embedder

    def spy(model, dtype):
        dtypes.append(dtype)
        return real_embedder(model, dtype)

    monkeypatch.setattr("finetune.embeddings.embedder", spy)
    options = ("--epochs", "1", "--embedding-precision", given)
    assert main(tiny_run(tmp_path / "data", tmp_path / "out", tiny_clip_files, *options)) == 0
    assert dtypes == [precision.DTYPES[given]] * 3  # train, validation, test


def test_an_unknown_precision_is_a_usage_error(tmp_path, capsys):
    argv = ["--data", str(tmp_path), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--embedding-precision", "fp16"])
    assert exit_info.value.code == 2
    assert "--embedding-precision" in capsys.readouterr().err
