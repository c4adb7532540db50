"""Latent shift: how much of an encoder attack's effect survives a transformation.

For an encoder E (the attacked one), per image:

    latent_shift = ||E(a) - E(b)|| / ||E(x_adv) - E(x)||

with (a, b) the pair being measured. On the `fidelity` pair (a = T(x_adv),
b = x) it is 1 when T keeps the attack's full effect on the encoder and near 0
when T washes it out. It is unavailable (no row) where the defense leaves the
encoder's output unchanged (defense=none).
"""

import torch

from benchmark.build import build
from benchmark.metrics.base import Metric


class LatentShift(Metric):
    name = "latent_shift"
    higher_is_better = None  # its meaning depends on the pair: see the docstring
    relative_to = "invisibility"

    def __init__(self, encoder: dict):
        self.embedder_config = encoder
        self.embedder = build(encoder, where="latent_shift.encoder")

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.double() - b.double()).flatten(1).norm(dim=1)
