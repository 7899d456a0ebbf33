"""The torch-free preprocessing must give exactly the pixels open_clip's transform gives."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest

from inference.preprocess import eval_transform
from tests.corpus import photo

SHAPES = [(320, 240), (240, 320), (224, 224), (1000, 97), (150, 100), (97, 1000), (225, 223)]
SETTINGS = [
    {"size": 224},
    {"size": [224, 192]},
    {"size": 224, "resize_mode": "squash", "interpolation": "bilinear"},
    {"size": 224, "resize_mode": "longest", "fill_color": 127},
    {"size": [160, 224], "resize_mode": "longest"},
    {"size": 96, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_same_pixels_as_open_clip(settings):
    fields = open_clip.transform.merge_preprocess_dict(open_clip.transform.PreprocessCfg(), {})
    fields.update(settings)
    size = fields["size"]
    reference = open_clip.transform.image_transform_v2(
        open_clip.transform.PreprocessCfg(
            **{**fields, "size": tuple(size) if isinstance(size, list) else size}
        ),
        is_train=False,
    )
    ours = eval_transform(fields)
    for seed, (width, height) in enumerate(SHAPES):
        image = photo(width, height, seed)
        expected = reference(image).numpy()
        got = ours(image)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="resize_mode"):
        eval_transform({"size": 224, "resize_mode": "stretch"})
