"""Byte-identical image files are one image: never both trained on and tested on."""

from __future__ import annotations

import hashlib
import json
import shutil

from finetune.cli import main
from finetune.split import Split, duplicate_groups, random_split
from tests.synthetic_harrison import write_synthetic_harrison
from tests.test_finetune import tiny_run


def test_duplicate_groups_keep_the_listed_order():
    digests = ["a", "b", "a", None, "c", "b", "a", None]
    assert duplicate_groups(digests) == [[0, 2, 6], [1, 5], [3], [4], [7]]


def test_a_split_written_before_duplicates_were_counted_still_loads(tmp_path):
    split = random_split([f"img{i}" for i in range(100)], None, seed=0)
    old = {"seed": 0, "train": split.train, "val": split.val, "test": split.test}
    (tmp_path / "split.json").write_text(json.dumps(old))
    assert Split.load(tmp_path) == split and split.duplicates_removed == 0


def add_copies(data, of: list[int]) -> list[str]:
    """List a byte-identical copy of each image numbered in `of` under a new name, after the
    others, with the original's hashtags and one more; returns the copies' names."""
    names = (data / "data_list.txt").read_text().split()
    tag_lines = (data / "tag_list.txt").read_text().splitlines()
    copies = []
    for number, original in enumerate(of):
        copy = f"instagram_dataset/copies/copy_{number}.jpg"
        (data / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / names[original], data / copy)
        copies.append(copy)
        names.append(copy)
        tag_lines.append(tag_lines[original].strip() + " reposted ")
    (data / "data_list.txt").write_text("\n".join(names) + "\n")
    (data / "tag_list.txt").write_text("\n".join(tag_lines) + "\n")
    return copies


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_copies_are_left_out_of_the_split_and_counted(tmp_path, tiny_clip_files, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    write_synthetic_harrison(data, count=150, seed=5)
    copies = add_copies(data, of=[0, 0, 1, 2])  # image 0 three times in all
    argv = tiny_run(data, out, tiny_clip_files, "--epochs", "1")
    assert main(argv) == 0
    assert "4 duplicate files left out" in capsys.readouterr().out

    split = json.loads((out / "split.json").read_text())
    listed = split["train"] + split["val"] + split["test"]
    assert split["duplicates_removed"] == 4 and not set(copies) & set(listed)
    assert len(listed) == 150
    assert len({digest(data / name) for name in listed}) == 150  # every file once
    images = json.loads((out / "metrics.json").read_text())["images"]
    assert images["duplicates_removed"] == 4 and images["listed"] == 154
    assert images["train"] + images["val"] + images["test"] == 150
    assert images["without_vocabulary_tags"] == 0

    # A run interrupted before copies were left out resumes with them left out: its split
    # (no count, the copies in the test part) is written again without them.
    old = {key: split[key] for key in ("seed", "train", "val", "test")}
    old["test"] = old["test"] + copies
    (out / "split.json").write_text(json.dumps(old))
    assert main([*argv, "--resume"]) == 0
    resumed = json.loads((out / "split.json").read_text())
    assert resumed == split
    assert json.loads((out / "metrics.json").read_text())["images"]["test"] == images["test"]
