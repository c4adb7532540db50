"""Differentiable geometric twins for defenses that optimise through a transformation (EOT).

The transform suite has rotation and resized crop only as Pillow operations
(benchmark.transforms.geometry); these two are their torch twins, random per image
(a seed derived from the image's) and differentiable, for a defense's `eot` list.
"""

import math

import torch
import torch.nn.functional as F

from benchmark.errors import check
from benchmark.images import generator_for
from benchmark.transforms.base import Transform


def _uniform(seed: int, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator_for(seed)))


class DiffRotate(Transform):
    """Rotation by an angle drawn uniformly in [-degrees, degrees] per image, bilinear,
    corners padded with zeros (as the Pillow `rotate` with fill=pad), differentiable."""

    name = "diff_rotate"
    random = True
    differentiable = True

    def __init__(self, degrees: float = 5.0):
        check(self.name, "degrees", degrees,
              isinstance(degrees, (int, float)) and 0 <= degrees <= 180, "an angle in [0, 180]")
        self.degrees = float(degrees)

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        angles = torch.tensor([math.radians(_uniform(s, -self.degrees, self.degrees))
                               for s in seeds], dtype=x.dtype, device=x.device)
        cos, sin = angles.cos(), angles.sin()
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                             torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DiffCenterCrop(Transform):
    """Centre crop keeping a side fraction drawn uniformly in [min_fraction, 1] per image,
    resized back to the input size (bilinear, antialiased), differentiable."""

    name = "diff_center_crop"
    random = True
    differentiable = True

    def __init__(self, min_fraction: float = 0.8):
        check(self.name, "min_fraction", min_fraction,
              isinstance(min_fraction, (int, float)) and 0 < min_fraction <= 1,
              "a fraction of the side in (0, 1]")
        self.min_fraction = float(min_fraction)

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = []
        for xi, s in zip(x, seeds):
            fraction = _uniform(s, self.min_fraction, 1.0)
            h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
            top, left = (height - h) // 2, (width - w) // 2
            crop = xi[None, :, top:top + h, left:left + w]
            out.append(F.interpolate(crop, size=(height, width), mode="bilinear",
                                     align_corners=False, antialias=True)[0])
        return torch.stack(out)
