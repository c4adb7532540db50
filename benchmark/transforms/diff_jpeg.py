"""Differentiable JPEG: kornia's `jpeg_codec_differentiable` (Diff-JPEG).

Reich, Debus, Hirsch and Lang, "Differentiable JPEG: The Devil is in the Details",
WACV 2024; maintained in kornia (`kornia.enhance.jpeg_codec_differentiable`). It
models libjpeg's codec (YCbCr, 4:2:0, 8x8 DCT, the standard tables scaled by
quality) with differentiable rounding, so a defense can optimise through JPEG
(expectation over transformation, compression surrogates). Its output is close
to Pillow's JPEG at the same quality; the `jpeg` transform is the exact one.

Strength: quality 90 -> 10 (as `jpeg`).
"""

import torch

from benchmark.transforms.base import Transform, check_number, lerp
from benchmark.transforms.jpeg import STRENGTH_QUALITY


class DifferentiableJpeg(Transform):
    name = "diff_jpeg"
    differentiable = True

    def __init__(self, quality: float = 75, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            quality = lerp(strength, *STRENGTH_QUALITY)
        self.quality = float(check_number(self.name, "quality", quality, 1, 100,
                                          "a quality in [1, 100]"))

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.tensor([self.quality], dtype=x.dtype, device=x.device)
        return jpeg_codec_differentiable(x, quality).clamp(0, 1)
