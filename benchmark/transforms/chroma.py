"""Chroma subsampling on its own: RGB -> YCbCr, chroma at reduced resolution, back to RGB.

What a JPEG encoder and most video paths do to colour before any quantisation,
here without the DCT: Pillow's `convert("YCbCr")` (JFIF full-range BT.601, the
transform libjpeg uses), each chroma plane averaged over blocks of fx x fy pixels
(`Image.reduce`, like libjpeg's downsampling, partial edge blocks included), then
brought back to full size by bilinear interpolation (`Image.resize` BILINEAR, which
for a factor of 2 has the 3/4-1/4 weights of libjpeg's "fancy" upsampling).

Strength: (0, 1/3] 4:2:2, (1/3, 2/3] 4:2:0, (2/3, 1] 4:1:0.
"""

import math

from PIL import Image

from benchmark.transforms.base import PillowTransform, check_choice

FACTORS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2), "4:1:1": (4, 1), "4:1:0": (4, 2)}
STRENGTH_MODES = ("4:2:2", "4:2:0", "4:1:0")


class ChromaSubsample(PillowTransform):
    name = "chroma_subsample"

    def __init__(self, subsampling: str = "4:2:0", strength: float | None = None):
        strength = self._strength(strength)
        if strength:
            subsampling = STRENGTH_MODES[max(0, math.ceil(strength * len(STRENGTH_MODES)) - 1)]
        self.subsampling = check_choice(self.name, "subsampling", subsampling, FACTORS)
        self.factors = FACTORS[subsampling]

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        y, cb, cr = img.convert("YCbCr").split()
        if self.factors != (1, 1):
            cb, cr = (c.reduce(self.factors).resize(img.size, Image.Resampling.BILINEAR)
                      for c in (cb, cr))
        return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")
