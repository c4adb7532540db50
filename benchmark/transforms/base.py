"""Transform contract: `__call__(x, seeds) -> x`, images NCHW float in [0, 1].

Transforms that go through an 8-bit file format (JPEG, Pillow resampling) work
image by image on uint8 images, as the real software does. `seeds` (one per
image) make random transforms reproducible: a random transform takes its
randomness from them only (without seeds every image uses seed 0);
deterministic ones ignore them.

Strength (WAVES, Ding et al. 2024, arXiv 2401.08573): every transform also
accepts `strength` in [0, 1], which, when not null, sets its native parameter
(JPEG quality, scale factor, sigma, ...) by a linear map from the mildest to
the strongest level of a stated range; WAVES's ranges are used where WAVES has
the transformation (umd-huang-lab/WAVES, distortions/distortions.py). Strength 0
is always the untouched image (`is_identity`), so that a strength sweep starts
at the reference; for codecs, whose mildest setting still changes the image,
this makes a step between 0 and the smallest positive strength.

Size: transforms that change the image size (a downscale, a crop, a platform's
size cap) restore the input size by default (`restore: true`), so that every
metric can compare with the clean image. `restore: false` keeps the new size,
for a step inside `chain` (which restores the input size at its end) or for
use from Python; `changes_size` says which case an instance is in.
"""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from benchmark.errors import check
from benchmark.images import to_pil


def check_strength(component: str, strength) -> float | None:
    check(component, "strength", strength,
          strength is None or (isinstance(strength, (int, float)) and not isinstance(strength, bool)
                               and 0 <= strength <= 1),
          "null or a number in [0, 1] (0 = untouched, 1 = the strongest level)")
    return None if strength is None else float(strength)


def lerp(strength: float, mildest: float, strongest: float) -> float:
    """The native value at `strength` on the line from the mildest to the strongest level."""
    return mildest + strength * (strongest - mildest)


def check_flag(component: str, key: str, value) -> bool:
    check(component, key, value, isinstance(value, bool), "true or false")
    return value


def check_choice(component: str, key: str, value, choices) -> str:
    check(component, key, value, value in choices, f"one of {sorted(choices)}")
    return value


def check_number(component: str, key: str, value, low: float, high: float, expected: str,
                 integer: bool = False, low_open: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    ok = (isinstance(value, kinds) and not isinstance(value, bool)
          and (low < value if low_open else low <= value) and value <= high)
    check(component, key, value, ok, expected)
    return value


class Transform:
    name = "transform"
    version = "1"  # bump when the algorithm changes: it is part of every cache key
    is_identity = False
    random = False  # draws from the per-image seeds
    differentiable = False  # gradients flow from the output back to the input
    changes_size = False  # the output keeps the size the transform gave it (restore: false)
    # per-image dataset side inputs (benchmark.side_inputs): no transform takes them yet
    needs_masks = needs_attributes = needs_audio = False
    masks_option = "mask=dataset"
    notice: str | None = None  # a deviation this instance runs with, printed with the job's notice
    # On the CPU, torch transforms run this many images at a time: their intermediates then
    # stay in cache, so a batch is never slower per image than single images (None: whole batch).
    cpu_batch: int | None = 1

    def __call__(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        if self.is_identity:
            return x
        seeds = [0] * x.shape[0] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{self.name}: {len(seeds)} seeds for {x.shape[0]} images")
        k = self.cpu_batch
        if k is None or x.device.type != "cpu" or x.shape[0] <= k:
            return self.forward(x, seeds)
        return torch.cat([self.forward(x[i:i + k], seeds[i:i + k])
                          for i in range(0, x.shape[0], k)])

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def _strength(self, strength) -> float | None:
        """Check `strength`; strength 0 makes this instance the identity."""
        strength = check_strength(self.name, strength)
        self.strength = strength
        if strength == 0:
            self.is_identity = True
        return strength


class PillowTransform(Transform):
    """A transform defined on one 8-bit Pillow RGB image (and its seed, if random)."""

    cpu_batch = None  # already image by image; each result goes straight into the output

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        out = None
        for i, (xi, seed) in enumerate(zip(x, seeds)):
            img = self.apply(to_pil(xi), seed)
            a = torch.from_numpy(np.array(img if img.mode == "RGB" else img.convert("RGB")))
            if out is None:
                out = torch.empty((x.shape[0], a.shape[2], a.shape[0], a.shape[1]))
            out[i].copy_(a.permute(2, 0, 1)).div_(255)  # = from_pil, without a second copy
        return out.to(x.device)


class Identity(Transform):
    """No transformation: the image as published."""

    name = "identity"
    is_identity = True

    def __init__(self, strength: float | None = None):
        self._strength(strength)
        self.is_identity = True

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return x
