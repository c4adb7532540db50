"""Inpainting masks of the defenses: the face rule of sd_inpaint, DiffusionGuard's contour shrink."""

import numpy as np
import pytest
import torch

from benchmark.defenses.masks import FaceMask, shrink_region
from benchmark.errors import ConfigValueError


def square(size=64, lo=16, hi=48):
    region = np.zeros((size, size), bool)
    region[lo:hi, lo:hi] = True
    return region


def test_shrink_stays_inside_the_region_and_is_seeded():
    region = square()
    shrunk = [shrink_region(region, np.random.default_rng(s)) for s in range(6)]
    for k in shrunk:
        assert not (k & ~region).any()  # never grows
        assert 0 < k.sum() <= region.sum()
    assert any(k.sum() < 0.9 * region.sum() for k in shrunk)  # it does shrink
    assert np.array_equal(shrunk[0], shrink_region(region, np.random.default_rng(0)))
    assert len({k.tobytes() for k in shrunk}) > 1
    assert not shrink_region(np.zeros((8, 8), bool), np.random.default_rng(0)).any()


def test_shrink_keeps_a_smooth_contour_on_a_box():
    """Every contour point moves (CHAIN_APPROX_NONE), so a box turns into a random blob."""
    k = shrink_region(square(128, 32, 96), np.random.default_rng(3), strength=1.1)
    rows = k.any(1).nonzero()[0]
    widths = [k[r].sum() for r in rows]
    assert len(set(widths)) > 3  # not a rectangle any more


def test_face_mask_regions(portraits64):
    x = torch.nn.functional.interpolate(portraits64[:1], size=(256, 256), mode="bilinear",
                                        antialias=True, align_corners=False)
    background = FaceMask("background")(x)
    face = FaceMask("face")(x)
    assert set(background.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(background, 1 - face)
    assert 0.05 < face.mean() < 0.8  # a face box, not the whole image
    assert not FaceMask("none")(x).any()
    with pytest.raises(ConfigValueError, match="region"):
        FaceMask("hair")
    with pytest.raises(ConfigValueError, match="margin"):
        FaceMask(margin=10)


def test_face_mask_falls_back_to_the_centre_box():
    flat = torch.full((1, 3, 64, 64), 0.5)
    face = FaceMask("face", no_face_box=0.5)(flat)
    assert face.sum() == 32 * 32 and face[0, 0, 16:48, 16:48].all()
