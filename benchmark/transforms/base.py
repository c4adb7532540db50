"""Transform contract: `__call__(x, seeds) -> x`, images NCHW float in [0, 1].

Transforms that go through an 8-bit file format (JPEG, Pillow resampling) work
image by image on uint8 arrays, as the real software does. `seeds` (one per
image) make random transforms reproducible; deterministic ones ignore them.
"""

from collections.abc import Sequence

import torch
from PIL import Image

from benchmark.images import from_pil, to_pil


class Transform:
    name = "transform"
    version = "1"  # bump when the algorithm changes: it is part of every cache key
    is_identity = False

    def __call__(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        raise NotImplementedError


class PillowTransform(Transform):
    """A transform defined on one Pillow RGB image."""

    def apply(self, img: Image.Image) -> Image.Image:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        return torch.stack([from_pil(self.apply(to_pil(xi))) for xi in x]).to(x.device)


class Identity(Transform):
    """No transformation: the image as published."""

    name = "identity"
    is_identity = True

    def __call__(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        return x
