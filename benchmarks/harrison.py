"""HARRISON's label statistics, shipped with the project, and tag lists drawn from them.

HARRISON (Minseok Park, Hanxiang Li, Junmo Kim, "HARRISON: A Benchmark on HAshtag
Recommendation for Real-world Images in Social Networks", arXiv:1605.05054, 2016) collected
57,383 Instagram photos under 50 hashtags (its *topics*) with the hashtags their posters wrote.
The project ships no data set, so its per-photo lists are not here: `data/harrison_topic_tags
.json.gz` (93 KB) holds their statistics per topic, how many photos it has and how many of them
carried each hashtag. The simulations and tests draw tag lists from them: each hashtag of a topic
appears, independently, with the share of the topic's photos that carried it. That keeps every
hashtag's frequency per topic (and so overall), and the number of hashtags per photo on average;
which hashtags go together beyond their topic is not kept.

    python -m benchmarks.harrison --build path/to/HARRISON   # rebuild from data_list/tag_list
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATISTICS_FILE = Path(__file__).resolve().parent / "data" / "harrison_topic_tags.json.gz"


@dataclass
class TopicStatistics:
    photos: dict[str, int]  # topic -> photos collected under it
    carried: dict[str, dict[str, int]]  # topic -> hashtag -> photos that carried it

    @classmethod
    def load(cls, path: Path = STATISTICS_FILE) -> TopicStatistics:
        data = json.loads(gzip.decompress(path.read_bytes()))
        return cls(data["photos"], data["carried"])

    @classmethod
    def from_label_files(cls, folder: Path) -> TopicStatistics:
        """From HARRISON's data_list.txt (the topic is the folder) and tag_list.txt."""
        paths = (folder / "data_list.txt").read_text().split()
        lines = (folder / "tag_list.txt").read_text().split("\n")
        photos, carried = Counter(), defaultdict(Counter)
        for path, line in zip(paths, lines, strict=False):
            topic = path.split("/")[1]
            photos[topic] += 1
            carried[topic].update(set(line.split()))
        return cls(dict(photos), {topic: dict(counts) for topic, counts in carried.items()})

    def save(self, path: Path = STATISTICS_FILE) -> None:
        data = {"photos": self.photos, "carried": self.carried}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))

    def frequency(self) -> Counter:
        """Photos per hashtag over every topic."""
        total: Counter = Counter()
        for counts in self.carried.values():
            total.update(counts)
        return total


class TagLists:
    """Draws HARRISON-like tag lists: `draw(rng, topic)`, or `draw(rng)` from a topic picked in
    proportion to its photos. Only the generator given decides, never hash order."""

    def __init__(self, statistics: TopicStatistics | None = None):
        statistics = statistics or TopicStatistics.load()
        self.topics = sorted(statistics.photos)
        sizes = np.array([statistics.photos[topic] for topic in self.topics], dtype=np.float64)
        self._topic_share = sizes / sizes.sum()
        self._tags, self._share = {}, {}
        for topic in self.topics:
            counts = statistics.carried[topic]
            tags = sorted(counts, key=lambda tag: (-counts[tag], tag))  # most carried first
            self._tags[topic] = tags
            self._share[topic] = np.array([counts[t] for t in tags]) / statistics.photos[topic]

    def pick_topic(self, rng: np.random.Generator) -> str:
        """A topic, in proportion to its photos."""
        return self.topics[rng.choice(len(self.topics), p=self._topic_share)]

    def draw(self, rng: np.random.Generator, topic: str | None = None) -> list[str]:
        topic = topic or self.pick_topic(rng)
        share = self._share[topic]
        while True:
            carried = rng.random(len(share)) < share
            if carried.any():
                return [tag for tag, kept in zip(self._tags[topic], carried, strict=True) if kept]


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild " + STATISTICS_FILE.name)
    parser.add_argument("--build", type=Path, required=True, metavar="HARRISON_FOLDER")
    args = parser.parse_args()
    statistics = TopicStatistics.from_label_files(args.build)
    statistics.save()
    pairs = sum(len(counts) for counts in statistics.carried.values())
    print(f"wrote {STATISTICS_FILE}: {len(statistics.photos)} topics, {pairs} topic-hashtag pairs")


if __name__ == "__main__":
    main()
