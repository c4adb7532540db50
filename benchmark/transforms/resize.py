"""Scale transformation: down by a factor and back up to the original size (Pillow).

Follows Pillow's `Image.resize`, which filters over the source footprint when
downscaling (antialiasing is built in for every filter except nearest).
"""

from PIL import Image

from benchmark.errors import check
from benchmark.transforms.base import PillowTransform

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


class Rescale(PillowTransform):
    name = "resize"

    def __init__(self, factor: float = 0.5, interpolation: str = "bicubic", restore: bool = True):
        check(self.name, "factor", factor, isinstance(factor, (int, float)) and 0 < factor <= 8,
              "a scale factor with 0 < factor <= 8")
        check(self.name, "interpolation", interpolation, interpolation in INTERPOLATIONS,
              f"one of {sorted(INTERPOLATIONS)}")
        self.factor = factor
        self.filter = INTERPOLATIONS[interpolation]
        self.restore = restore

    def apply(self, img: Image.Image) -> Image.Image:
        size = (max(1, round(img.width * self.factor)), max(1, round(img.height * self.factor)))
        small = img.resize(size, self.filter)
        return small.resize(img.size, self.filter) if self.restore else small
