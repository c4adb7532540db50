"""Geometric transformations with Pillow: rotation, and a crop resized back to full size.

- `Rotate`: `Image.rotate(angle)` about the centre (counter-clockwise degrees), on
  the same canvas. `fill: pad` leaves the uncovered corners black (as WAVES does);
  `fill: crop` keeps the largest centred rectangle of the image's aspect ratio that
  the rotated picture covers, and resizes it back to the input size.
- `ResizedCrop`: keeps a rectangle of `scale` times the image's area, of the image's
  aspect ratio, at the centre or at a position drawn from the image's seed, and
  resizes it back to the input size (torchvision's `resized_crop`, which WAVES
  uses, with Pillow's bilinear filter by default).

Both restore the input size by default; `restore: false` keeps the crop's size.

Strength: angle 0 -> 45 degrees, crop scale 1 -> 0.5 (WAVES's ranges).
"""

import math

import numpy as np
from PIL import Image

from benchmark.transforms.base import PillowTransform, check_choice, check_flag, check_number, lerp
from benchmark.transforms.resize import PILLOW_FILTERS, check_interpolation

ROTATE_FILTERS = ("nearest", "bilinear", "bicubic")


def inscribed_scale(width: int, height: int, degrees: float) -> float:
    """Largest k such that a centred k*width x k*height box lies inside the rotated image."""
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    return min(1.0, width / (width * c + height * s), height / (width * s + height * c))


def centred_box(width: int, height: int, crop_w: int, crop_h: int) -> tuple[int, int, int, int]:
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


class Rotate(PillowTransform):
    name = "rotate"

    def __init__(self, angle: float = 15.0, fill: str = "pad", interpolation: str = "bicubic",
                 restore: bool = True, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            angle = lerp(strength, 0, 45)
        self.angle = float(check_number(self.name, "angle", angle, -360, 360,
                                        "degrees in [-360, 360] (counter-clockwise)"))
        self.fill = check_choice(self.name, "fill", fill, ("pad", "crop"))
        self.filter = PILLOW_FILTERS[check_choice(self.name, "interpolation", interpolation,
                                                  ROTATE_FILTERS)]
        self.restore = check_flag(self.name, "restore", restore)
        self.changes_size = fill == "crop" and not restore and self.angle % 90 != 0
        if self.angle % 360 == 0:
            self.is_identity = True

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        rotated = img.rotate(self.angle, resample=self.filter, expand=False, fillcolor=(0, 0, 0))
        if self.fill == "pad":
            return rotated
        k = inscribed_scale(img.width, img.height, self.angle)
        box = centred_box(img.width, img.height, max(1, math.floor(k * img.width)),
                          max(1, math.floor(k * img.height)))
        cropped = rotated.crop(box)
        return cropped.resize(img.size, Image.Resampling.BICUBIC) if self.restore else cropped


class ResizedCrop(PillowTransform):
    name = "crop"

    def __init__(self, scale: float = 0.75, position: str = "center",
                 interpolation: str = "bilinear", restore: bool = True,
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            scale = lerp(strength, 1.0, 0.5)
        self.scale = float(check_number(self.name, "scale", scale, 0, 1,
                                        "an area fraction with 0 < scale <= 1", low_open=True))
        self.position = check_choice(self.name, "position", position, ("center", "random"))
        self.random = position == "random"
        self.filter = PILLOW_FILTERS[check_interpolation(self.name, "interpolation",
                                                         interpolation, "pillow")]
        self.restore = check_flag(self.name, "restore", restore)
        self.changes_size = not restore and self.scale != 1
        if self.scale == 1:
            self.is_identity = True

    def box(self, width: int, height: int, seed: int) -> tuple[int, int, int, int]:
        side = math.sqrt(self.scale)
        crop_w, crop_h = max(1, round(width * side)), max(1, round(height * side))
        if self.position == "center":
            return centred_box(width, height, crop_w, crop_h)
        rng = np.random.default_rng(seed)
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        return left, top, left + crop_w, top + crop_h

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        cropped = img.crop(self.box(img.width, img.height, seed))
        return cropped.resize(img.size, self.filter) if self.restore else cropped
