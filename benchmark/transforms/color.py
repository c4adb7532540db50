"""Photometric adjustments: brightness, contrast, saturation (Pillow's ImageEnhance), gamma.

`ImageEnhance` blends the image with a degenerate one, out = d + factor * (in - d),
clipped to 0..255: black for brightness, the mean grey level (of the "L" image)
for contrast, the image's own greyscale for saturation (`ImageEnhance.Color`).
Gamma is `Image.point` with the 8-bit table round(255 * (v / 255) ** gamma).

Strength: brightness and contrast factor 1 -> 2 (WAVES's ranges), saturation
1 -> 0 (colour to greyscale), gamma 1 -> 2.
"""

from PIL import Image, ImageEnhance

from benchmark.transforms.base import PillowTransform, check_number, lerp


class _Enhance(PillowTransform):
    enhancer = ImageEnhance.Brightness
    strength_range = (1.0, 2.0)

    def __init__(self, factor: float = 1.5, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            factor = lerp(strength, *self.strength_range)
        self.factor = float(check_number(self.name, "factor", factor, 0, 10,
                                         "an enhancement factor in [0, 10] (1 = unchanged)"))
        if self.factor == 1:
            self.is_identity = True

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        return self.enhancer(img).enhance(self.factor)


class Brightness(_Enhance):
    name = "brightness"
    enhancer = ImageEnhance.Brightness


class Contrast(_Enhance):
    name = "contrast"
    enhancer = ImageEnhance.Contrast


class Saturation(_Enhance):
    name = "saturation"
    enhancer = ImageEnhance.Color
    strength_range = (1.0, 0.0)

    def __init__(self, factor: float = 0.5, strength: float | None = None):
        super().__init__(factor, strength)


class Gamma(PillowTransform):
    name = "gamma"

    def __init__(self, gamma: float = 1.5, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            gamma = lerp(strength, 1.0, 2.0)
        self.gamma = float(check_number(self.name, "gamma", gamma, 0, 10,
                                        "an exponent with 0 < gamma <= 10 (1 = unchanged)",
                                        low_open=True))
        if self.gamma == 1:
            self.is_identity = True
        self.table = [round(255 * (v / 255) ** self.gamma) for v in range(256)] * 3

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        return img.point(self.table)
