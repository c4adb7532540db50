"""Additive Gaussian noise: x + sigma * N(0, 1), clipped to [0, 1], seeded per image.

The noise of each image is drawn from a torch generator seeded with its seed, so
T(x) and T(x_adv) of one subject receive the same noise. Differentiable (the
gradient is 1 where the output is not clipped), so it is its own twin for
expectation over transformation.

Strength: sigma 0 -> 0.1 (WAVES's noise range).
"""

import torch

from benchmark.images import generator_for
from benchmark.transforms.base import Transform, check_number, lerp


class GaussianNoise(Transform):
    name = "noise"
    random = True
    differentiable = True

    def __init__(self, sigma: float = 0.05, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            sigma = lerp(strength, 0, 0.1)
        self.sigma = float(check_number(self.name, "sigma", sigma, 0, 1,
                                        "a standard deviation in [0, 1] (image range)"))
        if self.sigma == 0:
            self.is_identity = True

    def noise(self, shape: torch.Size, seeds: list[int]) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=generator_for(s)) for s in seeds])

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return (x + self.sigma * self.noise(x.shape[1:], seeds).to(x)).clamp(0, 1)
