"""`python -m finetune`: metrics, data layouts, splits, calibration, and learning for real."""

import json

import numpy as np
import pytest
import torch

from finetune import pipeline
from finetune.calibration import blend_states, calibrate_thresholds, choose_blend
from finetune.cli import main
from finetune.dataset import DatasetError, frequent_hashtags, load_dataset
from finetune.losses import AsymmetricLoss, make_loss
from finetune.metrics import mean_average_precision, ranking_metrics
from finetune.split import held_out_count, random_split
from inference.cli import main as inference_main
from tests.synthetic_harrison import draw_labels, write_label_files, write_synthetic_harrison

# --- metrics, against cases worked out by hand -------------------------------------------


def test_ranking_metrics_match_hand_computed_values():
    scores = np.array(
        [
            [0.9, 0.8, 0.1, 0.3, 0.2, 0.0],  # top-5: 0 1 3 4 2
            [0.1, 0.2, 0.9, 0.8, 0.7, 0.6],  # top-5: 2 3 4 5 1
        ]
    )
    truth = np.array([[0, 1, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0]])
    metrics = ranking_metrics(scores, truth)
    # image 1: top-1 = tag 0 (wrong); top-5 holds tag 1 of {1, 5}. image 2: top-5 misses tag 0.
    assert metrics["precision@1"] == 0
    assert metrics["recall@5"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["accuracy@5"] == pytest.approx(0.5)


def test_mean_average_precision_by_hand():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.9]])
    truth = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    # tag 0 ranks images 0,1,2,3: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2
    # tag 1 ranks images 3,1,2,0: its one positive at rank 2 -> 1/2
    expected = ((1 + 2 / 3) / 2 + 1 / 2) / 2
    assert mean_average_precision(scores, truth) == pytest.approx(expected)


def test_ties_count_against_average_precision():
    # Two images with equal scores, one positive: it is ranked at the tie's end, precision 1/2.
    assert mean_average_precision(np.array([[0.5], [0.5]]), np.array([[1], [0]])) == 0.5


def test_images_without_vocabulary_tags_are_left_out_of_the_averages():
    scores = np.array([[0.9, 0.1], [0.9, 0.1]])
    truth = np.array([[1, 0], [0, 0]])
    assert ranking_metrics(scores, truth)["precision@1"] == 1.0


# --- losses ------------------------------------------------------------------------------


def test_asymmetric_loss_without_focusing_is_bce():
    logits, targets = torch.randn(4, 7), (torch.rand(4, 7) > 0.7).float()
    plain = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits, targets)
    torch.testing.assert_close(plain, make_loss("bce")(logits, targets))
    # Focusing shrinks the loss of easy negatives.
    assert make_loss("asl")(logits, targets) < plain


# --- data layouts and splits -------------------------------------------------------------


def test_missing_layout_files_are_named(tmp_path):
    (tmp_path / "data_list.txt").write_text("a.jpg\n")
    with pytest.raises(DatasetError, match=r"missing tag_list\.txt"):
        load_dataset(tmp_path)
    (tmp_path / "tag_list.txt").write_text("a\nb\n")
    with pytest.raises(DatasetError, match=r"1 lines but tag_list\.txt has 2"):
        load_dataset(tmp_path)


def test_flattened_images_folder_and_manifests_are_read(tmp_path):
    images = tmp_path / "flat" / "images"
    (images / "sea").mkdir(parents=True)
    (images / "sea" / "image_1.jpg").write_bytes(b"x")
    (images / "beach_image_2.jpg").write_bytes(b"x")
    (tmp_path / "flat" / "data_list.txt").write_text(
        "instagram_dataset/sea/image_1.jpg\ninstagram_dataset/beach/image_2.jpg\n"
    )
    (tmp_path / "flat" / "tag_list.txt").write_text("sea Sun \n#beach \n")
    dataset = load_dataset(tmp_path / "flat")
    assert [s.path.name for s in dataset.samples] == ["image_1.jpg", "beach_image_2.jpg"]
    assert dataset.samples[0].hashtags == ("sea", "sun") and dataset.vocabulary is None

    (tmp_path / "mine.csv").write_text('image,hashtags\nflat/images/sea/image_1.jpg,"#dog, cat"\n')
    (tmp_path / "mine.jsonl").write_text('{"image": "gone.jpg", "hashtags": ["x"]}\n')
    assert load_dataset(tmp_path / "mine.csv").samples[0].hashtags == ("dog", "cat")
    with pytest.raises(DatasetError, match="none of the 1 images"):
        load_dataset(tmp_path / "mine.jsonl")


def test_split_follows_the_paper_and_reproduces():
    assert held_out_count(57_383, None) == 5_000
    assert held_out_count(1_000, None) == 87  # the paper's proportion
    assert held_out_count(1_000, 0.2) == 200 and held_out_count(1_000, 50) == 50
    names = [f"img{i}" for i in range(1000)]
    first, again = random_split(names, None, seed=3), random_split(names, None, seed=3)
    assert first == again and first != random_split(names, None, seed=4)
    assert len(first.test) == len(first.val) == 87
    assert sorted(first.train + first.val + first.test) == sorted(names)
    with pytest.raises(ValueError, match="lower --test-size"):
        held_out_count(10, 5)


def test_frequent_hashtags_on_lists_as_large_as_harrisons(tmp_path):
    names, tag_lists = draw_labels(57_383, seed=0)
    write_label_files(tmp_path, names, tag_lists)
    first = tmp_path / names[0]
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    dataset = load_dataset(tmp_path)
    assert len(dataset.samples) == 57_383 and dataset.missing == 57_382
    # HARRISON's own vocabulary lists its hashtags by frequency rank: love, friend, beach...
    assert frequent_hashtags(dataset.samples, 2) == ["love", "friend"]


# --- calibration -------------------------------------------------------------------------


def test_wise_ft_blend_interpolates_weights_and_keeps_integer_buffers():
    zero, tuned = (
        {"w": torch.zeros(2), "n": torch.tensor(3)},
        {"w": torch.ones(2), "n": torch.tensor(5)},
    )
    blended = blend_states(zero, tuned, 0.25)
    torch.testing.assert_close(blended["w"], torch.full((2,), 0.25))
    assert blended["n"] == 5
    weight, curve = choose_blend(lambda w: 1 - (w - 0.5) ** 2, [0.0, 0.5, 1.0])
    assert weight == 0.5 and curve[1.0] == 0.75


def test_thresholds_maximise_f1_per_tag():
    scores = np.array([[0.9, 0.2], [0.6, 0.3], [0.4, 0.1], [0.1, 0.4]])
    truth = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    thresholds = calibrate_thresholds(scores, truth)
    assert thresholds[0] == 0.6  # keeps both positives, drops every negative
    assert thresholds[1] == calibrate_thresholds(scores[:, :1], truth[:, :1])[0]  # pooled fallback


# --- learning, end to end on a synthetic HARRISON ----------------------------------------


def tiny_run(data, out, tiny_clip_files, *options: str) -> list[str]:
    """`python -m finetune` arguments for the tiny test model on the CPU."""
    config_path, weights_path = tiny_clip_files
    return [
        *("--data", str(data), "--out", str(out), "--model", config_path),
        *("--pretrained", weights_path, "--device", "cpu", "--workers", "0", *options),
    ]


LEARN_ARGS = [
    "--unfreeze-blocks", "all", "--epochs", "20", "--batch-size", "32",
    "--encoder-lr", "1e-3", "--lr", "2e-2",
]  # fmt: skip


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, tiny_clip_files):
    folder = tmp_path_factory.mktemp("synthetic")
    vocabulary = write_synthetic_harrison(folder / "data", count=1000, seed=0)
    broken = (folder / "data" / "data_list.txt").read_text().split()[0]
    (folder / "data" / broken).write_bytes(b"\xff\xd8 this JPEG is broken")
    status = main(tiny_run(folder / "data", folder / "out", tiny_clip_files, *LEARN_ARGS))
    assert status == 0
    return folder, vocabulary, json.loads((folder / "out" / "metrics.json").read_text())


def test_fine_tuning_beats_zero_shot_and_popularity_by_far(synthetic_run):
    _, _, metrics = synthetic_run
    finetuned, zero_shot, popularity = (
        metrics["finetuned"], metrics["zero_shot"], metrics["popularity"]
    )  # fmt: skip
    for baseline in (zero_shot, popularity):
        assert finetuned["map"] > baseline["map"] + 0.4
        assert finetuned["precision@1"] > baseline["precision@1"] + 0.3
        assert finetuned["recall@5"] > baseline["recall@5"] + 0.2
    images = metrics["images"]
    assert images["unreadable"] == 1
    assert images["train"] + images["val"] + images["test"] == 999


def test_the_checkpoint_reproduces_its_test_metrics_through_inference(synthetic_run, capsys):
    folder, vocabulary, metrics = synthetic_run
    out, data = folder / "out", folder / "data"
    config = json.loads((out / "config.json").read_text())
    assert config["vocabulary"] == vocabulary and len(config["thresholds"]) == len(vocabulary)
    assert config["provenance"]["unfreeze_blocks"] == "all"
    split = json.loads((out / "split.json").read_text())
    assert not set(split["test"]) & set(split["train"] + split["val"])

    truth = dict(
        zip(
            (data / "data_list.txt").read_text().split(),
            [set(line.split()) for line in (data / "tag_list.txt").read_text().splitlines()],
            strict=True,
        )
    )
    images = [str(data / name) for name in split["test"]]
    inference_main(["--checkpoint", str(out), "--json", "--top-k", "1", "--device", "cpu", *images])
    hits = [
        line["hashtags"][0]["tag"] in truth[line["image"].removeprefix(f"{data}/")]
        for line in map(json.loads, capsys.readouterr().out.splitlines())
        if "hashtags" in line
    ]
    assert len(hits) == metrics["images"]["test"]
    assert sum(hits) / len(hits) == pytest.approx(metrics["finetuned"]["precision@1"], abs=0.02)


def test_linear_probe_is_deterministic_with_a_seed(tmp_path, tiny_clip_files):
    write_synthetic_harrison(tmp_path / "data", count=200, seed=1)
    reports = []
    for run in ("a", "b"):
        options = ("--epochs", "3", "--seed", "7")
        assert main(tiny_run(tmp_path / "data", tmp_path / run, tiny_clip_files, *options)) == 0
        reports.append(json.loads((tmp_path / run / "metrics.json").read_text()))
    assert reports[0] == reports[1]


def test_an_interrupted_run_resumes_where_it_stopped(
    tmp_path, tiny_clip_files, monkeypatch, capsys
):
    write_synthetic_harrison(tmp_path / "data", count=200, seed=2)
    options = ("--unfreeze-blocks", "1", "--epochs", "3", "--batch-size", "64")
    argv = tiny_run(tmp_path / "data", tmp_path / "out", tiny_clip_files, *options)
    epochs_started = []
    real_finetune = pipeline.finetune_encoder

    def interrupt_after_first_epoch(*args, save_progress, **kwargs):
        def save_then_stop(state):
            save_progress(state)
            raise KeyboardInterrupt

        return real_finetune(*args, save_progress=save_then_stop, **kwargs)

    monkeypatch.setattr(pipeline, "finetune_encoder", interrupt_after_first_epoch)
    assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "out" / "resume.pt").is_file() and (
        tmp_path / "out" / "split.json"
    ).is_file()

    def record_resume(*args, resume_state, **kwargs):
        epochs_started.append(resume_state["epoch"] if resume_state else 0)
        return real_finetune(*args, resume_state=resume_state, **kwargs)

    monkeypatch.setattr(pipeline, "finetune_encoder", record_resume)
    assert main([*argv, "--resume"]) == 0
    assert epochs_started == [1]
    assert not (tmp_path / "out" / "resume.pt").exists()


def test_wrong_layout_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "missing data_list.txt and tag_list.txt" in err and "Traceback" not in err


def test_a_second_run_reads_embeddings_from_the_cache(tmp_path, tiny_clip_files, monkeypatch):
    from finetune import embeddings

    write_synthetic_harrison(tmp_path / "data", count=120, seed=3)
    assert (
        main(tiny_run(tmp_path / "data", tmp_path / "first", tiny_clip_files, "--epochs", "1")) == 0
    )

    def no_decoding(self, index):
        raise AssertionError("every embedding should have come from the cache")

    monkeypatch.setattr(embeddings.ImageFiles, "__getitem__", no_decoding)
    assert (
        main(tiny_run(tmp_path / "data", tmp_path / "second", tiny_clip_files, "--epochs", "1"))
        == 0
    )
