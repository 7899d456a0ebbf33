"""How often each hashtag is used: a popularity prior for the zero-shot head.

CLIP scores how well a hashtag's words fit a photo, not how often people use the hashtag, and
hashtag use is far from uniform (on HARRISON, popularity alone gives precision@1 11.3). So the
zero-shot head adds `alpha * log p(tag)` to each hashtag's bias, the label-shift correction of
Saerens et al. (2002) and the logit adjustment of Menon et al. (2021, "Long-tail learning via
logit adjustment") run the other way: from a model that treats its labels alike to the
frequencies people actually use. README.md ("The zero-shot head's popularity prior") argues
the default alpha.

Counted with care: HARRISON was collected by searching 50 hashtags, so counted naively its
frequencies mostly reflect its collection (`#yellow` has 2,667 uses, only 211 of them on photos
not collected under `#yellow`). Each hashtag is counted only on photos not collected under it,
out of those photos, with add-one smoothing so a hashtag never seen still gets a finite prior.

The counts ship as inference/data/harrison_tag_counts.tsv, made from HARRISON's label files:

    python -m inference.prior ../shared/harrison > inference/data/harrison_tag_counts.tsv

Torch-free: the zero-shot cache key depends on the prior, and is computed before torch loads.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from inference.vocab import normalize_hashtag, parse_vocabulary

log = logging.getLogger(__name__)

COUNTS_RESOURCE = "harrison_tag_counts.tsv"  # inference/data/
# How much of the full label-shift correction the zero-shot head gets (README.md argues it).
DEFAULT_PRIOR_ALPHA = 0.75


@functools.cache
def _shipped_counts() -> tuple[dict[str, tuple[int, int]], str]:
    """{hashtag: (photos using it not collected under it, photos not collected under it)}, and
    a digest of the file (the zero-shot cache key holds it)."""
    text = resources.files("inference").joinpath("data", COUNTS_RESOURCE).read_text()
    counts = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            tag, uses, photos = line.split("\t")
            counts[tag] = (int(uses), int(photos))
    return counts, hashlib.sha256(text.encode()).hexdigest()[:16]


def counts_digest() -> str:
    return _shipped_counts()[1]


def centred_log_prior(vocabulary: Sequence[str]) -> list[float] | None:
    """log p(tag) for each hashtag, minus the median over the vocabulary (a typical hashtag's
    bias is unchanged; only the ranking between hashtags is the prior's business), or None when
    the statistics know none of these hashtags. Logged once per vocabulary."""
    return _centred_log_prior(tuple(vocabulary))


@functools.cache
def _centred_log_prior(vocabulary: tuple[str, ...]) -> tuple[float, ...] | None:
    counts, _ = _shipped_counts()
    known = {
        tag: math.log((counts[tag][0] + 1) / (counts[tag][1] + 2))
        for tag in vocabulary
        if tag in counts
    }
    if not known:
        log.info(
            "no usage statistics for any of these %d hashtags: the zero-shot head ranks them "
            "by the picture alone, without a popularity prior",
            len(vocabulary),
        )
        return None
    typical = statistics.median(known.values())
    missing = len(vocabulary) - len(known)
    log.info(
        "zero-shot popularity prior from HARRISON's usage counts for %d of %d hashtags%s",
        len(known),
        len(vocabulary),
        f" ({missing} without statistics get a typical hashtag's)" if missing else "",
    )
    return tuple(known.get(tag, typical) - typical for tag in vocabulary)


def count_outside_collections(
    image_paths: Sequence[str], tag_lists: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """{hashtag: (uses, photos)} where both count only photos not collected under the hashtag
    (HARRISON's paths are instagram_dataset/<collection hashtag>/image_N.jpg)."""
    collections = [Path(path).parent.name.lower() for path in image_paths]
    collected = Counter(collections)
    uses: Counter[str] = Counter()
    for collection, tags in zip(collections, tag_lists, strict=True):
        uses.update(
            tag for tag in {normalize_hashtag(t) for t in tags.split()} if tag != collection
        )
    total = len(image_paths)
    every_tag = sorted(set(uses) | set(collected))
    return {tag: (uses[tag], total - collected[tag]) for tag in every_tag}


def main(harrison_dir: str) -> None:
    folder = Path(harrison_dir)
    paths = [line for line in (folder / "data_list.txt").read_text().splitlines() if line]
    tag_lists = (folder / "tag_list.txt").read_text().splitlines()[: len(paths)]
    vocabulary = parse_vocabulary((folder / "vocab_index.txt").read_text())
    counts = count_outside_collections(paths, tag_lists)
    print("# hashtag\tphotos using it, not collected under it\tphotos not collected under it")
    print(f"# from HARRISON's label files ({len(paths)} photos): python -m inference.prior DIR")
    for tag in vocabulary:
        uses, photos = counts.get(tag, (0, len(paths)))
        print(f"{tag}\t{uses}\t{photos}")


if __name__ == "__main__":
    main(*sys.argv[1:])
