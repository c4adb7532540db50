"""Low-pass filters: Gaussian blur, box blur, median filter.

Each follows one named library; they differ in kernel and border:

- `pillow`: `ImageFilter.GaussianBlur(radius=sigma)` approximates the Gaussian by
  three extended box filters (Gwosdek et al. 2011); `BoxBlur(radius)` may be
  fractional; `MedianFilter(size)`. Borders repeat the edge pixel.
- `opencv`: `cv2.GaussianBlur` with the kernel size OpenCV picks for 8-bit images
  (round(6 sigma + 1), made odd) in its bit-exact fixed-point arithmetic,
  `cv2.blur` (box of 2r + 1), `cv2.medianBlur`. Borders reflect (BORDER_REFLECT_101).
- `kornia`: `kornia.filters.gaussian_blur2d` / `box_blur` in float, differentiable,
  with OpenCV's kernel size and border, so it matches `opencv` before rounding.

The median of OpenCV and Pillow agree pixel for pixel (borders repeat the edge in
both); OpenCV's is the default because it is about 1000x faster.

Strength: Gaussian sigma 0 -> 20 px (WAVES's blurring range, Pillow's radius),
box radius 0 -> 10 px, median size 1 -> 9.
"""

import numpy as np
import torch
from PIL import Image, ImageFilter

from benchmark.errors import check
from benchmark.images import from_uint8, to_uint8
from benchmark.transforms.base import Transform, check_choice, check_number, lerp

LIBRARIES = ("pillow", "opencv", "kornia")


def opencv_gaussian_size(sigma: float) -> int:
    """The kernel side cv2.GaussianBlur chooses for an 8-bit image when ksize is (0, 0)."""
    return round(sigma * 3 * 2 + 1) | 1


def _fit(size: int, height: int, width: int) -> int:
    """Largest odd kernel whose reflected border fits the image (torch's reflect padding)."""
    return min(size, 2 * min(height, width) - 1)


class _Filter(Transform):
    """A filter that runs per image in Pillow or OpenCV, or on the batch in kornia."""

    libraries = LIBRARIES

    def _library(self, library: str) -> str:
        self.library = check_choice(self.name, "library", library, self.libraries)
        self.differentiable = library == "kornia"
        return library

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        if self.library == "kornia":
            return self.kornia(x).clamp(0, 1)
        out = []
        for xi in x:
            a = to_uint8(xi)
            if self.library == "opencv":
                b = self.opencv(a)
            else:
                b = np.asarray(Image.fromarray(a).filter(self.pillow_filter()))
            out.append(from_uint8(b))
        return torch.stack(out).to(x.device)

    def pillow_filter(self) -> ImageFilter.Filter:
        raise NotImplementedError

    def opencv(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def kornia(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GaussianBlur(_Filter):
    name = "blur"

    def __init__(self, sigma: float = 2.0, library: str = "pillow",
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            sigma = lerp(strength, 0, 20)
        self.sigma = float(check_number(self.name, "sigma", sigma, 0, 100,
                                        "a standard deviation in pixels, 0 <= sigma <= 100"))
        self._library(library)
        if self.sigma == 0:
            self.is_identity = True

    def pillow_filter(self) -> ImageFilter.Filter:
        return ImageFilter.GaussianBlur(radius=self.sigma)

    def opencv(self, a: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.GaussianBlur(a, (0, 0), sigmaX=self.sigma, sigmaY=self.sigma)

    def kornia(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        size = _fit(opencv_gaussian_size(self.sigma), *x.shape[-2:])
        return gaussian_blur2d(x, (size, size), (self.sigma, self.sigma), border_type="reflect")


class BoxBlur(_Filter):
    name = "box_blur"

    def __init__(self, radius: float = 2, library: str = "pillow",
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            radius = round(lerp(strength, 0, 10))
        self._library(library)
        if library == "pillow":
            check_number(self.name, "radius", radius, 0, 100, "a radius in pixels in [0, 100]")
        else:
            check_number(self.name, "radius", radius, 0, 100,
                         f"an integer radius in 0..100 with library={library}", integer=True)
        self.radius = radius
        if radius == 0:
            self.is_identity = True

    def pillow_filter(self) -> ImageFilter.Filter:
        return ImageFilter.BoxBlur(self.radius)

    def opencv(self, a: np.ndarray) -> np.ndarray:
        import cv2

        side = 2 * self.radius + 1
        return cv2.blur(a, (side, side))

    def kornia(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.filters import box_blur

        side = _fit(2 * self.radius + 1, *x.shape[-2:])
        return box_blur(x, (side, side), border_type="reflect")


class MedianFilter(_Filter):
    name = "median"
    libraries = ("pillow", "opencv")

    def __init__(self, size: int = 3, library: str = "opencv", strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            size = 2 * round(lerp(strength, 0, 4)) + 1
        check_number(self.name, "size", size, 1, 99, "an odd integer in 1..99 (window side)",
                     integer=True)
        check(self.name, "size", size, size % 2 == 1, "an odd integer in 1..99 (window side)")
        self.size = size
        self._library(library)
        if size == 1:
            self.is_identity = True

    def pillow_filter(self) -> ImageFilter.Filter:
        return ImageFilter.MedianFilter(self.size)

    def opencv(self, a: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.medianBlur(np.ascontiguousarray(a), self.size)
