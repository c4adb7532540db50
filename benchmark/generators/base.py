"""Generator contract: `edit(x, seeds) -> y`, images NCHW float in [0, 1].

`seeds` come from the clean image's identity, never from the input's, so that
G(x), G(x_adv) and G(T(x_adv)) of one subject share their noise (paired noise).
"""

from collections.abc import Sequence

import torch


class Generator:
    name = "generator"
    version = "1"  # bump when the pipeline changes: it is part of every cache key
    is_identity = False

    def edit(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError


class NoGenerator(Generator):
    """G = identity: the job measures the images themselves (no generative model)."""

    name = "none"
    is_identity = True

    def edit(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        return x
