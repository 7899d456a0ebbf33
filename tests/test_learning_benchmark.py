"""benchmarks/learning.py's hard population: nothing scored is a shot of an answered scene, the
pixels are not a function of the hashtags, and the photos are the same under any hash seed."""

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.harrison import TagLists
from benchmarks.learning import RESHOOT_SHARE, hard_population
from benchmarks.tagged_photos import HardWorld
from inference.vocab import load_vocabulary

ROOT = Path(__file__).resolve().parents[1]


def test_scored_photos_are_scenes_nobody_answered_a_shot_of():
    population = hard_population(200, seed=0)
    answered = Counter(photo.scene for photo in population.answered)
    assert sum(answered.values()) - len(answered) > 0.15 * 200  # the re-shoots are there
    assert RESHOOT_SHARE > 0
    assert not set(answered) & {photo.scene for photo in population.unseen}
    assert len({photo.scene for photo in population.unseen}) == len(population.unseen)


def test_a_re_shoot_is_another_photo_of_the_same_things():
    world = HardWorld(TagLists(), load_vocabulary())
    photos = world.photos(60, seed=1, reshoot_share=0.5)
    by_scene: dict[str, list] = {}
    for photo in photos:
        by_scene.setdefault(photo.scene, []).append(photo)
    shots = next(shots for shots in by_scene.values() if len(shots) > 1)
    assert len({shot.tags for shot in shots}) == 1
    first, second = (np.asarray(shot.image, dtype=np.float32) for shot in shots[:2])
    assert np.abs(first - second).mean() > 5  # moved camera, exposure, noise


def test_the_pixels_are_not_a_function_of_the_hashtags():
    world = HardWorld(TagLists(), load_vocabulary())
    rng = np.random.default_rng(2)
    scenes = [world.scene(rng, str(n)) for n in range(400)]
    carried = sum(len(scene.tags) for scene in scenes)
    drawn = [world.vocabulary[obj[0]] for scene in scenes for obj in scene.objects]
    shown = sum(
        sum(world.vocabulary[obj[0]] in scene.tags for obj in scene.objects) for scene in scenes
    )
    assert 0.3 < shown / carried < 0.7  # many a carried hashtag does not show
    assert len(drawn) - shown > len(scenes)  # objects nobody tagged
    same_tags: dict[tuple, list] = {}
    for scene in scenes:
        same_tags.setdefault(scene.tags, []).append(scene)
    twins = next(group for group in same_tags.values() if len(group) > 1)
    assert twins[0].background != twins[1].background


def test_the_hard_photos_are_the_same_under_any_hash_seed():
    script = (
        "import hashlib, numpy as np\n"
        "from benchmarks.learning import hard_population\n"
        "population = hard_population(30, seed=0)\n"
        "digest = hashlib.sha256()\n"
        "for photo in population.answered + population.unseen[:30]:\n"
        "    digest.update(np.asarray(photo.image).tobytes() + repr(photo.tags).encode())\n"
        "print(digest.hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1 and len(next(iter(digests))) == len(hashlib.sha256().hexdigest())
