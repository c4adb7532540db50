"""Uniform random noise in [-eps, eps]: the baseline every protection paper compares with."""

from collections.abc import Sequence

import torch

from benchmark.defenses.base import Defense, check_budget
from benchmark.images import generator_for


class UniformNoise(Defense):
    name = "noise"

    def __init__(self, eps: float = 8.0):
        self.eps = check_budget(self.name, eps)

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        noise = torch.stack([
            torch.rand(x.shape[1:], generator=generator_for(s)) for s in seeds
        ]).to(x.device)
        return (x + (noise * 2 - 1) * self.eps).clamp(0, 1)
