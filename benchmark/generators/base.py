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
    needs_attributes = False  # true: edit() takes attributes=, each image's dataset attributes
    needs_audio = False  # true: edit() takes audio=, each image's dataset audio clip
    masks_option = "mask=dataset"  # how a user asks for the dataset's masks
    frames = 1  # > 1: edit() returns videos as film strips of this many frames
    # true: a differentiable GAN attribute editor (generators.gan.GanEditor: network, translate,
    # source_vectors, target_vector, all_target_vectors), what the GAN-editor defenses attack
    attribute_editor = False
    notice: str | None = None  # a deviation this instance runs with, printed with the job's notice

    def variants(self) -> list[tuple[str, "Generator", dict]] | None:
        """Several edits in one job (StarGAN's target=all): (label setting, generator, config
        change) each; None: this generator is the job's one edit."""
        return None

    def edit(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError


class NoGenerator(Generator):
    """G = identity: the job measures the images themselves (no generative model)."""

    name = "none"
    is_identity = True

    def edit(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        return x
