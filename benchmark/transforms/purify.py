"""This benchmark's transformation purifier: scale transformation + colour compression.

Sun et al., "Do Protective Perturbations Really Protect Portrait Privacy under
Real-world Image Transformations?" (arXiv 2604.23688, 2026) find that the scale
transformations and colour compression of ordinary display and sharing pipelines
wash protective perturbations out. This is this benchmark's OWN purifier built on
that finding, a configurable chain tuned by a grid study on the offline surrogate,
NOT the study's published purifier (TIP-RSR: benchmark.transforms.tip_rsr, whose
transformation stage alone is `tip_rsr_jpeg_resize`). All in Pillow, per image:

1. downscale by `scale` (`down` filter): the perturbation's high frequencies are
   averaged away;
2. colour compression at the low resolution, `colour`: `bits` (posterize to `bits`
   per channel), `palette` (`colors` colours, Pillow's fast octree), `jpeg` (`quality`),
   `chroma` (4:2:0 chroma subsampling) or `none`; `dither` for bits/palette;
3. upscale back to the input size (`up` filter);
4. optional light denoise (`median` window, 0 = off, OpenCV's medianBlur, which equals
   Pillow's MedianFilter; `blur` Gaussian sigma, 0 = off)
   and sharpening (`sharpen`: Pillow's UnsharpMask percent, radius 2, 0 = off).

The defaults come from the grid study scripts/purify_grid.py (results in
results/purify_grid.csv; the rule that picks them is stated in
configs/transform/purify.yaml).

Strength: the scale factor 1 -> 0.25, the rest as configured.
"""

import cv2
import numpy as np
from PIL import Image, ImageFilter

from benchmark.errors import check
from benchmark.transforms.base import PillowTransform, check_choice, check_number, lerp
from benchmark.transforms.chroma import ChromaSubsample
from benchmark.transforms.jpeg import check_quality, jpeg_round_trip
from benchmark.transforms.quantize import DITHERS, BitDepth, PaletteQuantize
from benchmark.transforms.resize import check_interpolation, resize_pil, scaled_size

COLOURS = ("none", "bits", "palette", "jpeg", "chroma")


class TransformPurification(PillowTransform):
    name = "purify"
    version = "2"  # 2: palette by fast octree, median by OpenCV

    def __init__(self, scale: float = 0.5, down: str = "bicubic", up: str = "bicubic",
                 colour: str = "chroma", bits: int = 5, colors: int = 64, quality: int = 75,
                 dither: str = "none", median: int = 0, blur: float = 0.0, sharpen: int = 0,
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            scale = lerp(strength, 1.0, 0.25)
        self.scale = float(check_number(self.name, "scale", scale, 0, 1,
                                        "a downscale factor with 0 < scale <= 1", low_open=True))
        self.down = check_interpolation(self.name, "down", down, "pillow")
        self.up = check_interpolation(self.name, "up", up, "pillow")
        self.colour = check_choice(self.name, "colour", colour, COLOURS)
        check_choice(self.name, "dither", dither, DITHERS)
        self.compress = self._compressor(colour, bits, colors, quality, dither)
        check(self.name, "median", median,
              isinstance(median, int) and not isinstance(median, bool)
              and (median == 0 or (3 <= median <= 99 and median % 2 == 1)),
              "0 (off) or an odd window side in 3..99")
        self.median = median
        self.blur = float(check_number(self.name, "blur", blur, 0, 10,
                                       "a Gaussian sigma in pixels, 0 (off) <= blur <= 10"))
        self.sharpen = check_number(self.name, "sharpen", sharpen, 0, 500,
                                    "an UnsharpMask percent in 0 (off)..500", integer=True)

    def _compressor(self, colour: str, bits: int, colors: int, quality: int, dither: str):
        if colour == "bits":
            check_number(self.name, "bits", bits, 1, 8, "an integer in 1..8 (bits per channel)",
                         integer=True)
            return BitDepth(bits=bits, dither=dither)
        if colour == "palette":
            check_number(self.name, "colors", colors, 2, 256, "an integer in 2..256",
                         integer=True)
            return PaletteQuantize(colors=colors, method="octree", dither=dither)
        if colour == "jpeg":
            return check_quality(self.name, quality)
        if colour == "chroma":
            return ChromaSubsample("4:2:0")
        return None

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        small = resize_pil(img, scaled_size(img.width, img.height, self.scale), self.down)
        if self.colour == "jpeg":
            small = jpeg_round_trip(small, self.compress)
        elif self.compress is not None:
            small = self.compress.apply(small, seed)
        out = resize_pil(small, img.size, self.up)
        if self.median:  # OpenCV's median equals Pillow's MedianFilter, 1000x faster
            out = Image.fromarray(cv2.medianBlur(np.asarray(out), self.median))
        if self.blur:
            out = out.filter(ImageFilter.GaussianBlur(self.blur))
        if self.sharpen:
            out = out.filter(ImageFilter.UnsharpMask(radius=2, percent=self.sharpen, threshold=0))
        return out
