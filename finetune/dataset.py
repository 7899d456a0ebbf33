"""Reading training data: HARRISON's layout, its flattened variant, or a manifest of your own.

HARRISON (`--data DIR`):
    DIR/data_list.txt    image paths, e.g. instagram_dataset/sea/image_50.jpg
    DIR/tag_list.txt     the hashtags of each image, space-separated, same line order
    DIR/vocab_index.txt  optional: the vocabulary (first word of each line)
Images are looked up at DIR/<path>, then in the flattened layouts DIR/images/sea/image_50.jpg
and DIR/images/sea_image_50.jpg (the first folder of the path dropped).

Your own data (`--data FILE`): a CSV with `image` and `hashtags` columns, or JSON Lines with
`{"image": ..., "hashtags": [...] or "a b c"}`. Image paths are relative to the file's folder.

The folder in HARRISON's paths is the hashtag used to *collect* the image; it is kept here only
as part of the path and never reaches the model, which sees pixels alone.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from inference.vocab import normalize_hashtag, parse_vocabulary

HARRISON_FILES = ("data_list.txt", "tag_list.txt")


class DatasetError(ValueError):
    """The data cannot be read; the message names the file and what was expected."""


@dataclass(frozen=True)
class Sample:
    name: str  # as listed in the data (stable across machines; used in split.json)
    path: Path | None  # where the image was found, None when it is missing
    hashtags: tuple[str, ...]


@dataclass
class Dataset:
    samples: list[Sample]
    vocabulary: list[str] | None  # the dataset's own vocabulary file, when it has one

    @property
    def missing(self) -> int:
        return sum(sample.path is None for sample in self.samples)


def load_dataset(data: Path) -> Dataset:
    if data.is_file():
        return _read_manifest(data)
    if not data.is_dir():
        raise DatasetError(f"--data {data} does not exist")
    missing = [name for name in HARRISON_FILES if not (data / name).is_file()]
    if missing:
        raise DatasetError(
            f"{data} is missing {' and '.join(missing)}. Expected HARRISON's layout "
            "(data_list.txt + tag_list.txt, optional vocab_index.txt), or pass a CSV/JSONL "
            "manifest file with `image` and `hashtags`."
        )
    names = _read_lines(data / "data_list.txt")
    tag_lines = _read_lines(data / "tag_list.txt")
    if len(names) != len(tag_lines):
        raise DatasetError(
            f"data_list.txt has {len(names)} lines but tag_list.txt has {len(tag_lines)}; "
            "they must list the same images in the same order"
        )
    samples = [
        Sample(name, _find_harrison_image(data, name), _hashtags(tags))
        for name, tags in zip(names, tag_lines, strict=True)
    ]
    vocab_file = data / "vocab_index.txt"
    vocabulary = None
    if vocab_file.is_file():
        vocabulary = parse_vocabulary(vocab_file.read_text(encoding="utf-8"), str(vocab_file))
    return _checked(Dataset(samples, vocabulary), data)


def frequent_hashtags(samples: Iterable[Sample], size: int) -> list[str]:
    """The `size` most frequent hashtags, ties broken alphabetically for reproducibility."""
    counts = Counter(tag for sample in samples for tag in sample.hashtags)
    return [tag for tag, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:size]]


def _read_lines(path: Path) -> list[str]:
    # HARRISON's files end lines with a space; blank trailing lines are not entries.
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _hashtags(text: str) -> tuple[str, ...]:
    tags = (normalize_hashtag(word) for word in re.split(r"[\s,]+", text))
    return tuple(dict.fromkeys(tag for tag in tags if tag))


def _find_harrison_image(root: Path, name: str) -> Path | None:
    parts = Path(name).parts
    candidates = [root / name]
    if len(parts) > 1:
        candidates += [root / "images" / Path(*parts[1:]), root / "images" / "_".join(parts[1:])]
    return next((path for path in candidates if path.is_file()), None)


def _read_manifest(path: Path) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv_rows(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl_rows(path)
    else:
        raise DatasetError(f"{path}: a manifest must be .csv or .jsonl")
    samples = []
    for image, hashtags in rows:
        text = " ".join(hashtags) if isinstance(hashtags, list) else hashtags
        image_path = path.parent / image
        samples.append(Sample(image, image_path if image_path.is_file() else None, _hashtags(text)))
    return _checked(Dataset(samples, vocabulary=None), path)


def _read_csv_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"image", "hashtags"} <= set(reader.fieldnames):
            raise DatasetError(f"{path} needs a header row with `image` and `hashtags` columns")
        return [(row["image"], row["hashtags"] or "") for row in reader]


def _read_jsonl_rows(path: Path) -> list[tuple[str, str | list[str]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            rows.append((str(record["image"]), record["hashtags"]))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DatasetError(
                f'{path} line {number}: expected {{"image": ..., "hashtags": ...}} ({error})'
            ) from None
    return rows


def _checked(dataset: Dataset, source: Path) -> Dataset:
    if not dataset.samples:
        raise DatasetError(f"{source} lists no images")
    if dataset.missing == len(dataset.samples):
        raise DatasetError(
            f"none of the {len(dataset.samples)} images listed in {source} were found "
            f"(first one: {dataset.samples[0].name}). Are the images next to the lists?"
        )
    return dataset
