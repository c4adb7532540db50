"""Generator contract: `edit(x, seeds) -> y`, images NCHW float in [0, 1].

`seeds` come from the clean image's identity, never from the input's, so that
G(x), G(x_adv) and G(T(x_adv)) of one subject share their noise (paired noise).

A generator whose `needs_masks` is true (sd_inpaint with `mask: dataset`) is
called as `edit(x, seeds, masks=m)`: m (N, 1, H, W) in {0, 1}, 1 = repaint, the
masks the dataset carries for the clean images of the batch (`dataset.masks`),
aligned with x. The runner adds each mask's content to the item's cache key.
"""

from collections.abc import Sequence

import torch


class Generator:
    name = "generator"
    version = "1"  # bump when the pipeline changes: it is part of every cache key
    is_identity = False
    needs_masks = False  # true: edit() takes masks=, the dataset's per-image masks

    def edit(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError


class NoGenerator(Generator):
    """G = identity: the job measures the images themselves (no generative model)."""

    name = "none"
    is_identity = True

    def edit(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        return x
