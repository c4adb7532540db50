"""Inpainting masks of the defenses: the face rule of sd_inpaint, DiffusionGuard's contour shrink."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from benchmark.defenses.masks import FaceMask, contour_radius, shrink_region, smooth_offsets
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


class RecordingRng:
    """A seeded generator that draws the largest distance d = r and records each offset draw."""

    def __init__(self, seed=0):
        self.rng, self.calls, self.offset_draws = np.random.default_rng(seed), 0, []

    def uniform(self, low, high):
        self.calls += 1
        return high if self.calls == 1 else self.rng.uniform(low, high)

    def integers(self, low, high, size):
        self.offset_draws.append((low, high, size))
        return self.rng.integers(low, high, size=size)


def test_shrink_reach_and_contour_points_are_diffusionguards():
    """Reach int(r * strength) with r = sqrt(pi A / 2); a box's contour is its 4 corners
    (CHAIN_APPROX_SIMPLE), not its every boundary pixel."""
    region = square(128, 32, 96)
    rng = RecordingRng()
    shrink_region(region, rng, strength=1.1)
    # choi403/DiffusionGuard get_mask_radius_list: white values of the 512 px RGB mask / (6 / pi)
    rgb = np.zeros((512, 512, 3), np.uint8)
    rgb[:128, :128][region] = 255
    reference_radius = ((rgb > 128).sum() / (3 * 2 / math.pi)) ** 0.5
    assert contour_radius(region) == pytest.approx(reference_radius)
    low, high, size = rng.offset_draws[0]
    assert (low, high) == (-int(reference_radius * 1.1), int(reference_radius * 1.1) + 1)
    assert size == (4, 2)


def test_offsets_are_smoothed_as_scipys_gaussian_filter_on_integers():
    """The reference filters integer offsets with scipy's defaults: reflect at the ends,
    an integer result."""
    offsets = np.random.default_rng(5).integers(-9, 10, size=(40, 2))
    ours = smooth_offsets(offsets, 3.0)
    for axis in range(2):
        assert np.array_equal(ours[:, axis], gaussian_filter(offsets[:, axis], sigma=3.0))
    assert ours.dtype.kind == "i"


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
