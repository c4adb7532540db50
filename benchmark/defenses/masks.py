"""Inpainting masks for the defenses that target an inpainting editor.

The rule is the `sd_inpaint` generator's, so that a defense protects the
region the editor keeps: dlib's best face box (benchmark/models/face_detection.py),
enlarged by `margin` around its centre; a centre box of side `no_face_box`
where no face is found. Masks are 1 where the editor repaints: `background`
keeps the face and repaints the rest (PhotoGuard's and DiffusionGuard's
setting), `face` repaints the face, `none` repaints nothing (no mask), and
`dataset` takes each image's own mask given with the dataset (`dataset.masks`,
white = repaint), the one `sd_inpaint` uses with `mask=dataset`.

DiffusionGuard's mask augmentation, `shrink_region`, is here too.
"""

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.errors import BenchError, check

log = logging.getLogger(__name__)
REGIONS = ("background", "face", "none", "dataset")


class FaceMask:
    """`masks(x) -> (N, 1, H, W)` in {0, 1}, 1 where the inpainting editor repaints."""

    def __init__(self, region: str = "background", margin: float = 1.3, detector: str = "hog",
                 no_face_box: float = 0.5, component: str = "mask"):
        check(component, "mask.region", region, region in REGIONS, f"one of {REGIONS}")
        check(component, "mask.margin", margin,
              isinstance(margin, (int, float)) and 0.5 <= margin <= 4,
              "a number in [0.5, 4] (box side as a multiple of the detected face box)")
        check(component, "mask.no_face_box", no_face_box,
              isinstance(no_face_box, (int, float)) and 0 < no_face_box <= 1,
              "a number in (0, 1] (side of the centre box used where no face is found)")
        self.region, self.margin, self.no_face_box = region, float(margin), float(no_face_box)
        self.component = component
        self.needs_masks = region == "dataset"
        self.detector = None
        if region not in ("none", "dataset"):
            from benchmark.models.face_detection import FaceDetector

            self.detector = FaceDetector(detector, component=component)

    def __call__(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        n, _, height, width = x.shape
        if self.region == "dataset":
            if masks is None:
                raise BenchError(f"{self.component}: mask.region=dataset needs the dataset's "
                                 "masks (dataset.masks=/path/to/masks)")
            masks = masks.to(x.device, torch.float32)
            if masks.shape[-2:] != (height, width):
                masks = F.interpolate(masks, size=(height, width), mode="bilinear",
                                      antialias=True, align_corners=False)
            return (masks >= 0.5).float()
        if self.region == "none":
            return torch.zeros(n, 1, height, width, device=x.device)
        from benchmark.models.face_detection import face_box_masks

        inside, _ = face_box_masks(self.detector, x, self.margin, self.no_face_box)
        return (inside if self.region == "face" else 1 - inside).to(x.device)


def contour_radius(region: np.ndarray) -> float:
    """DiffusionGuard's size of a region, sqrt(pi * A / 2) for an area of A pixels.

    choi403/DiffusionGuard utils/utils.py `get_mask_radius_list` divides the count of
    white values of the RGB mask (3 per pixel, at 512 px) by 3 * 2 / pi; per pixel
    that is A * pi / 2, about 2.2 times the radius of the disc of equal area.
    """
    return math.sqrt(math.pi * float(region.sum()) / 2)


def smooth_offsets(offsets: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of integer offsets along the contour, as DiffusionGuard runs it.

    scipy's `gaussian_filter` on its integer offsets: boundary mode `reflect` (scipy's
    default; a contour's two ends are not joined) and an integer result, the
    filtered value truncated toward zero.
    """
    from scipy.ndimage import gaussian_filter1d

    smoothed = gaussian_filter1d(offsets.astype(np.float64), sigma, axis=0, mode="reflect")
    return np.trunc(smoothed).astype(np.int64)


def shrink_region(region: np.ndarray, rng: np.random.Generator, strength: float = 1.1,
                  smoothness: float = 0.1, max_rounds: int = 15) -> np.ndarray:
    """DiffusionGuard's contour shrink: a random, smooth shrinking of a binary region.

    Reference: choi403/DiffusionGuard utils/mask_generation.py
    (`random_contour_perturbation`, `get_mask` mode contour_shrink). The region's
    radius r is `contour_radius`. A distance d ~ U(0, r) sets the largest point
    offset, int(d * strength) pixels; for a random number of rounds in
    [1, max_rounds), the points of the region's largest outer contour as OpenCV
    stores it with CHAIN_APPROX_SIMPLE (corners and segment ends only: a box has
    4) move by independent integer offsets in that range, smoothed along the
    contour by `smooth_offsets` with sigma r * smoothness; a point that leaves the
    current region is put back on the nearest contour point; the moved contour is
    filled. Returns the new region (bool, same shape). One deliberate difference:
    the filled polygon is cut to the original region, so a concave region cannot
    grow (the reference does not cut it).
    """
    import cv2

    region = region.astype(bool)
    if not region.any():
        return region
    radius = contour_radius(region)
    reach = int(rng.uniform(0, radius) * strength)
    sigma = max(radius * smoothness, 1e-3)
    rounds = int(rng.uniform(1, max_rounds))
    current = region.copy()
    height, width = region.shape
    for _ in range(rounds):
        contours, _ = cv2.findContours(current.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            break
        contour = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.int64)
        offsets = rng.integers(-reach, reach + 1, size=contour.shape)
        moved = contour + smooth_offsets(offsets, sigma)
        moved[:, 0] = moved[:, 0].clip(0, width - 1)
        moved[:, 1] = moved[:, 1].clip(0, height - 1)
        outside = ~current[moved[:, 1], moved[:, 0]]
        if outside.any():
            gaps = ((moved[outside, None, :] - contour[None, :, :]) ** 2).sum(-1)
            moved[outside] = contour[gaps.argmin(1)]
        filled = np.zeros((height, width), np.uint8)
        cv2.drawContours(filled, [moved.reshape(-1, 1, 2).astype(np.int32)], 0, 1, cv2.FILLED)
        current = filled.astype(bool) & region
    return current


def masked_image(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What an SD inpainting pipeline encodes: the repainted region set to 0 in [-1, 1] (grey)."""
    return x * (1 - mask) + 0.5 * mask
