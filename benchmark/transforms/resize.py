"""Scale transformation: down (or up) by a factor and back to the original size.

Three libraries, because they resample differently and real pipelines use all three:

- `pillow` (`Image.resize`): filters over the source footprint when downscaling,
  so every filter except nearest is antialiased; bicubic uses a = -0.5.
- `opencv` (`cv2.resize`): samples the source at the kernel's fixed support, so
  no filter is antialiased except `area` (pixel-area averaging); bicubic uses a = -0.75.
- `torch` (`torch.nn.functional.interpolate`, what torchvision's tensor resize
  calls): differentiable; `antialias` chooses (true, torchvision's default since
  0.17, matches Pillow's bilinear/bicubic to within a grey level); no Lanczos.

`antialias: null` means "what the library does"; Pillow and OpenCV have no
switch, so there it may only be set to their own behaviour.

Strength: factor 1 -> 0.25 (the study's scale range, 0.25-0.9).
"""

import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.errors import check
from benchmark.images import from_pil, to_pil
from benchmark.transforms.base import (
    Transform,
    check_choice,
    check_flag,
    check_number,
    lerp,
)

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
PILLOW_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
OPENCV_FLAGS = {"nearest": "INTER_NEAREST", "bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC",
                "area": "INTER_AREA", "lanczos": "INTER_LANCZOS4"}
# "nearest-exact" is the one that picks the same source pixels as Pillow and OpenCV.
TORCH_MODES = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic",
               "area": "area"}
LIBRARIES = ("pillow", "opencv", "torch")
NATIVE_ANTIALIAS = {"pillow": True, "opencv": False}
STRENGTH_FACTOR = (1.0, 0.25)


def scaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    return max(1, round(width * factor)), max(1, round(height * factor))


def resize_pil(img: Image.Image, size: tuple[int, int], interpolation: str,
               library: str = "pillow") -> Image.Image:
    """Resize one 8-bit image to (width, height) with Pillow or OpenCV."""
    if size == img.size:
        return img
    if library == "opencv":
        import cv2
        import numpy as np

        out = cv2.resize(np.asarray(img), size,
                         interpolation=getattr(cv2, OPENCV_FLAGS[interpolation]))
        return Image.fromarray(out)
    return img.resize(size, PILLOW_FILTERS[interpolation])


def resize_tensor(x: torch.Tensor, size: tuple[int, int], interpolation: str,
                  antialias: bool) -> torch.Tensor:
    """Resize a float NCHW batch to (width, height) with PyTorch (differentiable)."""
    if (x.shape[-1], x.shape[-2]) == size:
        return x
    mode = TORCH_MODES[interpolation]
    kwargs = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kwargs["align_corners"] = False
    return F.interpolate(x, size=(size[1], size[0]), mode=mode, **kwargs).clamp(0, 1)


def check_interpolation(component: str, key: str, interpolation: str, library: str) -> str:
    check_choice(component, key, interpolation, INTERPOLATIONS)
    if library == "torch":
        check(component, key, interpolation, interpolation in TORCH_MODES,
              f"one of {sorted(TORCH_MODES)} with library=torch (PyTorch has no Lanczos)")
    return interpolation


class Rescale(Transform):
    name = "resize"

    def __init__(self, factor: float = 0.5, interpolation: str = "bicubic",
                 library: str = "pillow", antialias: bool | None = None, restore: bool = True,
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            factor = lerp(strength, *STRENGTH_FACTOR)
        check_number(self.name, "factor", factor, 0, 8, "a scale factor with 0 < factor <= 8",
                     low_open=True)
        check_choice(self.name, "library", library, LIBRARIES)
        check_interpolation(self.name, "interpolation", interpolation, library)
        if library in NATIVE_ANTIALIAS:
            native = NATIVE_ANTIALIAS[library]
            check(self.name, "antialias", antialias, antialias in (None, native),
                  f"null or {str(native).lower()}: {library} has no antialias switch "
                  f"(library=torch has one)")
            antialias = native
        else:
            antialias = True if antialias is None else check_flag(self.name, "antialias",
                                                                  antialias)
        self.factor = float(factor)
        self.interpolation = interpolation
        self.library = library
        self.antialias = antialias
        self.restore = check_flag(self.name, "restore", restore)
        self.changes_size = not restore and factor != 1
        self.differentiable = library == "torch"

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        height, width = x.shape[-2:]
        small = scaled_size(width, height, self.factor)
        if self.library == "torch":
            y = resize_tensor(x, small, self.interpolation, self.antialias)
            return resize_tensor(y, (width, height), self.interpolation,
                                 self.antialias) if self.restore else y
        out = []
        for xi in x:
            img = resize_pil(to_pil(xi), small, self.interpolation, self.library)
            if self.restore:
                img = resize_pil(img, (width, height), self.interpolation, self.library)
            out.append(from_pil(img))
        return torch.stack(out).to(x.device)
