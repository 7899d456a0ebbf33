"""Fine-tuning speed for ViT-B-32, and what a full HARRISON run would cost.

    python benchmarks/finetune.py [--device auto|cpu|cuda] [--embedding-only]

Measures, in one run: embedding throughput of the frozen encoder (decode included, on
Instagram-sized 640x640 JPEGs) in fp32, in bf16, and in the precision stage 1 chooses on this
machine (`--embedding-precision auto`), linear-probe steps/s on 997 tags, and stage-2 (LP-FT)
steps/s with 2 and with all vision blocks unfrozen. Then projects a full HARRISON run: 57,383
images, 47,383 of them for training, the default 10 epochs. `--embedding-only` stops after the
embedding figures. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.embeddings import embed_images
from finetune.losses import make_loss
from finetune.precision import EmbeddingPrecision, measure_bf16
from finetune.training import TrainOptions, train_linear_probe, unlock_last_blocks
from inference.device import resolve_device
from inference.model import HashtagModel
from inference.spec import ModelSpec
from tests.corpus import jpeg

HARRISON_IMAGES, HARRISON_TRAIN, VOCABULARY, EPOCHS = 57_383, 47_383, 997, 10


def random_vit_b_32(device: torch.device) -> HashtagModel:
    torch.manual_seed(0)  # the same weights every run: the figures are reproducible
    clip_model = open_clip.create_model("ViT-B-32")
    spec = ModelSpec(
        architecture="ViT-B-32",
        model_cfg=open_clip.get_model_config("ViT-B-32"),
        preprocess=dict(open_clip.get_model_preprocess_cfg(clip_model)),
        vocabulary=[f"tag{i}" for i in range(VOCABULARY)],
    )
    head = torch.nn.Linear(512, VOCABULARY)
    return HashtagModel(clip_model.visual, head, spec).to(device)


def write_photos(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        paths.append(folder / f"{i}.jpg")
        paths[-1].write_bytes(jpeg(640, 640, seed=i))
    return paths


def embedding_rate(
    model: HashtagModel, paths: list[Path], batch_size: int, precision: str
) -> float:
    """Images/s of stage 1's embedding pass in `precision` (fp32 or bf16), decode included."""
    given = EmbeddingPrecision(precision)
    embed = dict(batch_size=batch_size, workers=2, precision=given)
    embed_images(model, paths[:batch_size], **embed)  # warm-up
    start = time.perf_counter()
    embed_images(model, paths, **embed)
    return len(paths) / (time.perf_counter() - start)


def products_choice(model: HashtagModel, device: torch.device, batch_size: int) -> str:
    """What `--embedding-precision auto` picks here: the measurement stage 1 makes, printed."""
    if device.type != "cpu":
        return "fp32"  # a GPU keeps the model's own precision (fp32 for this model)
    measurement = measure_bf16(model, batch_size)
    print(f"the product's choice: {measurement.describe()}")
    return "bf16" if measurement.accepted else "fp32"


def probe_steps_per_second(batch_size: int = 128, images: int = 20_000) -> float:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(images, 512)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (rng.random((images, VOCABULARY)) < 0.004).astype(np.float32)
    head = torch.nn.Linear(512, VOCABULARY)
    options = TrainOptions(epochs=1, batch_size=batch_size, patience=10)
    start = time.perf_counter()
    train_linear_probe(head, x, y, x[:1000], y[:1000], options)
    return (images / batch_size) / (time.perf_counter() - start)


def stage_two_steps_per_second(
    model: HashtagModel, blocks: int | None, batch_size: int, steps: int
) -> float:
    device = next(model.parameters()).device
    unlock_last_blocks(model, blocks)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = make_loss("bce")
    pixels = torch.randn(batch_size, 3, 224, 224, device=device)
    targets = (torch.rand(batch_size, VOCABULARY, device=device) < 0.004).float()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    for step in range(steps + 1):
        if step == 1:  # the first step warms up kernels and the allocator
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast:
            logits, _ = model(pixels)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument(
        "--embedding-only", action="store_true", help="only the embedding pass's figures"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    batch = 128 if on_gpu else 32
    steps = 20 if on_gpu else 3
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, ViT-B-32, batch {batch}")

    model = random_vit_b_32(device).eval()
    chosen = products_choice(model, device, batch)
    with tempfile.TemporaryDirectory() as temp:
        paths = write_photos(Path(temp), args.images)
        rates = {name: embedding_rate(model, paths, batch, name) for name in ("fp32", "bf16")}
    embed_rate, fp32_rate = rates[chosen], rates["fp32"]
    embed_all = HARRISON_IMAGES / embed_rate
    print(
        f"frozen-encoder embedding (decode included): fp32 {fp32_rate:.1f} images/s, "
        f"bf16 {rates['bf16']:.1f} images/s ({rates['bf16'] / fp32_rate:.2f}x)"
    )
    print(
        f"the product's choice, {chosen}: {embed_rate:.1f} images/s = "
        f"{embed_rate / fp32_rate:.2f}x fp32; full HARRISON ({HARRISON_IMAGES:,} images) "
        f"embedded in {hours(embed_all)} (fp32: {hours(HARRISON_IMAGES / fp32_rate)})"
    )
    embedding = {
        "device": str(device),
        "embedding_precision": chosen,
        "embedding_images_per_s": round(embed_rate, 2),
        "embedding_images_per_s_by_precision": {k: round(v, 2) for k, v in rates.items()},
        "embedding_speedup_over_fp32": round(embed_rate / fp32_rate, 2),
        "harrison_embedding_hours": round(embed_all / 3600, 2),
    }
    if args.embedding_only:
        print(json.dumps(embedding))
        return
    probe_rate = probe_steps_per_second()
    tuned_2 = stage_two_steps_per_second(model, 2, batch, steps)
    tuned_all = stage_two_steps_per_second(model, None, batch, steps)

    probe_total = EPOCHS * (HARRISON_TRAIN / 128) / probe_rate
    # validation embedded again after every stage-2 epoch, by the model itself: fp32 on a CPU
    validation = 2 * 5_000 / fp32_rate
    stage_two = {
        blocks: EPOCHS * ((HARRISON_TRAIN / batch) / rate + validation)
        for blocks, rate in (("2", tuned_2), ("all", tuned_all))
    }
    print(f"linear probe: {probe_rate:.0f} steps/s (batch 128, 997 tags)")
    print(f"stage 2, last 2 blocks: {tuned_2:.2f} steps/s = {tuned_2 * batch:.1f} images/s")
    print(f"stage 2, all blocks:    {tuned_all:.2f} steps/s = {tuned_all * batch:.1f} images/s")
    print(
        f"full HARRISON: embedding {hours(embed_all)}, linear probe {hours(probe_total)}, "
        f"stage 2 ({EPOCHS} epochs) last 2 blocks {hours(stage_two['2'])}, "
        f"all blocks {hours(stage_two['all'])}"
    )
    print(
        json.dumps(
            {
                **embedding,
                "probe_steps_per_s": round(probe_rate, 1),
                "stage2_steps_per_s": {"2": round(tuned_2, 3), "all": round(tuned_all, 3)},
                "stage2_batch": batch,
                "harrison_hours": {
                    "embedding": round(embed_all / 3600, 2),
                    "linear_probe": round(probe_total / 3600, 3),
                    "stage2_last_2_blocks": round(stage_two["2"] / 3600, 1),
                    "stage2_all_blocks": round(stage_two["all"] / 3600, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
