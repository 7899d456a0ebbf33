"""Photos whose hashtags can be seen, for learning from answers without HARRISON's images.

Two populations. `tagged_photos`, the easy one (the tests use it): each hashtag paints a disc
of its own colour in a place of its own (with jitter), over scene content that no hashtag
names (a random smooth background). A real encoder (the tests' tiny random CLIP) sees the
hashtags only through the pixels, so the embeddings are not a function of the hashtags, and its
zero-shot head knows nothing of them: whatever a re-fit gets right, it learned from the
answers. Used by tests/test_learning_journey.py and benchmarks/learning.py. Its photos show
their hashtags so plainly (twelve hashtags, each a disc half the photo wide in a place of its
own, shown whenever carried and never otherwise) that the pixels all but spell the answers.

`HardWorld` (benchmarks/learning.py's hard population): HARRISON's 997 hashtags and tag lists,
most of what a hashtag means not in the photo, and most of the photo not in its hashtags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Twelve HARRISON hashtags, most popular first (how often a photo carries each).
TAGS = (
    "dog", "beach", "sunset", "food", "flower", "car", "snow", "city", "cat", "coffee", "tree",
    "sea",
)  # fmt: skip
POPULARITY = np.array([0.30, 0.25, 0.2, 0.18, 0.15, 0.12, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05])
COLOURS = np.random.default_rng(123).integers(0, 256, size=(len(TAGS), 3))


@dataclass(frozen=True)
class TaggedPhoto:
    image: Image.Image
    tags: tuple[str, ...]  # the hashtags it shows
    scene: str = ""  # the scene it is a shot of (the hard population's re-shoots share one)


def tagged_photo(rng: np.random.Generator, side: int = 64) -> TaggedPhoto:
    """One to three hashtags, drawn by popularity, painted over a random scene."""
    count = int(rng.integers(1, 4))
    chosen = sorted(
        rng.choice(len(TAGS), size=count, replace=False, p=POPULARITY / POPULARITY.sum())
    )
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.uniform(0, 6.3)
        channels.append(127 + 50 * np.sin(x * fx * 6.3 + phase) * np.cos(y * fy * 6.3))
    image = Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    radius = side / 4
    for tag in chosen:
        cx = (tag % 4) * side / 4 + side / 8 + rng.normal(0, side / 20)
        cy = (tag // 4) * side / 3 + side / 6 + rng.normal(0, side / 20)
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, fill=tuple(int(c) for c in COLOURS[tag]))
    return TaggedPhoto(image, tuple(TAGS[tag] for tag in chosen))


def tagged_photos(count: int, seed: int) -> list[TaggedPhoto]:
    rng = np.random.default_rng(seed)
    return [tagged_photo(rng) for _ in range(count)]


# --- The hard population -------------------------------------------------------------------

HARD_SIDE = 64
VISIBILITY = 1.0  # a carried hashtag shows with a chance drawn from [0, VISIBILITY)
TOPIC_LOOK = (0.6, 1.0)  # how much a topic's look weighs in its photos' background, at most
CLUTTER = 2  # objects nobody tagged, on average
OBJECT_RADIUS = (0.05, 0.14)  # of the side
NOISE = 12.0  # sensor noise, in pixel levels


@dataclass(frozen=True)
class Scene:
    """What a photographer pointed the camera at; every shot of it shows the same things."""

    key: str  # unique per scene: a re-shoot has its original's key
    topic: str
    tags: tuple[str, ...]
    background: tuple[float, ...]  # three (fx, fy, phase) waves: content no hashtag names
    look: float  # how much the topic's look shows
    objects: tuple[tuple[int, float, float, float], ...]  # (palette index, x, y, radius)


class HardWorld:
    """HARRISON-like photos, for a population where reading the pixels is not reading the
    answers. Tag lists come from HARRISON's statistics per topic (benchmarks/harrison.py: 997
    hashtags, 4.5 a photo on average, many of them nothing a camera sees). A photo shows:
    - its topic's look (two colours in stripes of the topic's own direction and width), mixed
      into the background by an amount of its own: the topic's strength times 0.3-1;
    - each hashtag it carries as a small disc of that hashtag's colour, anywhere, but only
      with that hashtag's own chance of showing (drawn once, uniform in [0, VISIBILITY));
    - what no hashtag names: the scene's background waves, objects nobody tagged (discs in
      the colours of hashtags it does not carry, CLUTTER on average), the exposure and sensor
      noise of each shot.
    A re-shoot is another shot of the same scene: the same things, a moved camera, another
    exposure and noise. The world (colours, chances, looks) is fixed; scenes and shots come
    from the generator given, so photos(count, seed) is the same on every run."""

    def __init__(self, tag_lists, vocabulary: list[str]):
        rng = np.random.default_rng(321)
        self.tag_lists = tag_lists
        self.vocabulary = list(vocabulary)
        self.index = {tag: i for i, tag in enumerate(self.vocabulary)}
        self.colours = rng.integers(0, 256, size=(len(self.vocabulary), 3))
        self.visibility = rng.uniform(0, VISIBILITY, len(self.vocabulary))
        # A topic's look: two colours in stripes of its own direction and width.
        self.topic_look = {
            t: (
                rng.integers(0, 256, 3),
                rng.integers(0, 256, 3),
                rng.uniform(0, 3.15),
                rng.uniform(1, 4),
            )
            for t in tag_lists.topics
        }
        self.topic_strength = {t: float(rng.uniform(*TOPIC_LOOK)) for t in tag_lists.topics}

    def scene(self, rng: np.random.Generator, key: str) -> Scene:
        topic = self.tag_lists.pick_topic(rng)
        tags: list[str] = []
        while not tags:  # at least one vocabulary hashtag
            tags = [t for t in self.tag_lists.draw(rng, topic) if t in self.index]
        background = tuple(
            float(v)
            for _ in range(3)
            for v in (rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.uniform(0, 6.3))
        )
        shown = [self.index[t] for t in tags if rng.random() < self.visibility[self.index[t]]]
        clutter = rng.integers(0, len(self.vocabulary), size=rng.poisson(CLUTTER))
        objects = tuple(
            (
                int(i),
                float(rng.uniform(0, 1)),
                float(rng.uniform(0, 1)),
                float(rng.uniform(*OBJECT_RADIUS)),
            )
            for i in [*shown, *clutter]
        )
        look = self.topic_strength[topic] * float(rng.uniform(0.3, 1))
        return Scene(key, topic, tuple(sorted(set(tags))), background, look, objects)

    def shot(self, scene: Scene, rng: np.random.Generator) -> TaggedPhoto:
        """One shot of `scene`: the camera moved a little, its own exposure and noise."""
        side = HARD_SIDE
        shift = rng.normal(0, 0.05, 2)
        y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
        first, second, angle, width = self.topic_look[scene.topic]
        along = (x + shift[0]) * np.cos(angle) + (y + shift[1]) * np.sin(angle)
        stripes = 0.5 + 0.5 * np.sin(along * width * 6.3)
        channels = []
        for c in range(3):
            fx, fy, phase = scene.background[3 * c : 3 * c + 3]
            wave = 127 + 50 * np.sin((x + shift[0]) * fx * 6.3 + phase) * np.cos(
                (y + shift[1]) * fy * 6.3
            )
            look = stripes * first[c] + (1 - stripes) * second[c]
            channels.append((1 - scene.look) * wave + scene.look * look)
        pixels = np.stack(channels, -1) * rng.uniform(0.7, 1.3)  # exposure
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for palette, ox, oy, radius in scene.objects:
            cx, cy = (ox + shift[0]) * side, (oy + shift[1]) * side
            r = radius * side
            tint = np.clip(self.colours[palette] + rng.normal(0, 20, 3), 0, 255)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in tint))
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, NOISE, (side, side, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        return TaggedPhoto(image, scene.tags, scene.key)

    def photos(self, count: int, seed: int, reshoot_share: float = 0.0) -> list[TaggedPhoto]:
        """`count` shots; each is, with `reshoot_share`, another shot of one of the earlier
        scenes here (never of another call's: scene keys are `seed:n`)."""
        rng = np.random.default_rng(seed)
        scenes: list[Scene] = []
        photos = []
        for n in range(count):
            if scenes and rng.random() < reshoot_share:
                scene = scenes[int(rng.integers(len(scenes)))]
            else:
                scene = self.scene(rng, f"{seed}:{n}")
                scenes.append(scene)
            photos.append(self.shot(scene, rng))
        return photos
