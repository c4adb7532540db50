"""Expectation over transformation: the differentiable transforms a defense optimises through.

A defense's `eot` key is a list of transform configs; each must be
differentiable (the twins of the transforms issue: `GaussianBlur` with
`library: kornia`, `Rescale` with `library: torch`, `DifferentiableJpeg`, ...,
or the two below, which the transform suite has only as Pillow operations).
The PGD engine draws one of them per image and gradient sample, with a seed
derived from the image's.
"""

import math

import torch
import torch.nn.functional as F

from benchmark.build import build
from benchmark.errors import check
from benchmark.images import generator_for
from benchmark.transforms.base import Transform


def build_eot(configs, component: str) -> list[Transform]:
    check(component, "eot", configs, configs is None or isinstance(configs, (list, tuple)),
          "a list of differentiable transform configs")
    transforms = [build(c, where=f"{component}.eot[{i}]") for i, c in enumerate(configs or [])]
    for i, t in enumerate(transforms):
        check(component, f"eot[{i}]", getattr(t, "name", type(t).__name__),
              callable(t) and getattr(t, "differentiable", False),
              "a differentiable transform (e.g. blur with library=kornia, diff_jpeg, "
              "benchmark.defenses.eot.DiffRotate)")
    return transforms


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
