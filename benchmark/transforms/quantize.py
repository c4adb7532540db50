"""Colour quantisation with Pillow: a palette of k colours, or b bits per channel.

- `PaletteQuantize` is `Image.quantize(colors, method, kmeans)` (median cut, maximum
  coverage, fast octree, or libimagequant where Pillow has it; `kmeans` > 0 refines
  the palette by that many k-means passes). Pillow dithers only when it maps an
  image onto a given palette, so Floyd-Steinberg dithering is Pillow's own two
  steps: find the palette, then `quantize(palette=..., dither=FLOYDSTEINBERG)`.
- `BitDepth` keeps the top `bits` bits of each channel, `ImageOps.posterize`; with
  Floyd-Steinberg dithering each channel is mapped by Pillow onto the same
  2^bits levels with error diffusion.

Strength: colours 256 -> 4 (geometric), bits 8 -> 3 (the study's depth range 3-7).
"""

from PIL import Image, ImageOps, features

from benchmark.errors import check
from benchmark.transforms.base import PillowTransform, check_choice, check_number, lerp

METHODS = {
    "mediancut": Image.Quantize.MEDIANCUT,
    "maxcoverage": Image.Quantize.MAXCOVERAGE,
    "octree": Image.Quantize.FASTOCTREE,
    "libimagequant": Image.Quantize.LIBIMAGEQUANT,
}
DITHERS = {"none": Image.Dither.NONE, "floyd_steinberg": Image.Dither.FLOYDSTEINBERG}
STRENGTH_LOG2_COLORS = (8, 2)
STRENGTH_BITS = (8, 3)


class PaletteQuantize(PillowTransform):
    name = "quantize"

    def __init__(self, colors: int = 64, method: str = "octree", kmeans: int = 0,
                 dither: str = "none", strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            colors = round(2 ** lerp(strength, *STRENGTH_LOG2_COLORS))
        self.colors = check_number(self.name, "colors", colors, 2, 256, "an integer in 2..256",
                                   integer=True)
        check_choice(self.name, "method", method, METHODS)
        if method == "libimagequant":
            check(self.name, "method", method, features.check_feature("libimagequant"),
                  f"one of {sorted(set(METHODS) - {'libimagequant'})} (this Pillow was built "
                  f"without libimagequant)")
        self.method = METHODS[method]
        self.kmeans = check_number(self.name, "kmeans", kmeans, 0, 1000,
                                   "an integer in 0..1000 (k-means refinement passes)",
                                   integer=True)
        self.dither = DITHERS[check_choice(self.name, "dither", dither, DITHERS)]

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        paletted = img.quantize(self.colors, self.method, self.kmeans)
        if self.dither != Image.Dither.NONE:
            paletted = img.quantize(palette=paletted, dither=self.dither)
        return paletted.convert("RGB")


def _grey_palette(levels: list[int]) -> Image.Image:
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for level in levels for v in (level, level, level)])
    return palette


class BitDepth(PillowTransform):
    name = "bit_depth"

    def __init__(self, bits: int = 5, dither: str = "none", strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            bits = round(lerp(strength, *STRENGTH_BITS))
        self.bits = check_number(self.name, "bits", bits, 1, 8,
                                 "an integer in 1..8 (bits per channel)", integer=True)
        self.dither = DITHERS[check_choice(self.name, "dither", dither, DITHERS)]
        step = 2 ** (8 - self.bits)
        self.palette = _grey_palette(list(range(0, 256, step)))

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        if self.bits == 8:
            return img
        if self.dither == Image.Dither.NONE:
            return ImageOps.posterize(img, self.bits)
        # Pillow maps only RGB images onto a palette correctly: one grey RGB image per channel.
        channels = [
            channel.convert("RGB").quantize(palette=self.palette, dither=self.dither)
            .convert("L")
            for channel in img.split()
        ]
        return Image.merge("RGB", channels)
