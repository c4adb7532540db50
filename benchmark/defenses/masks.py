"""Inpainting masks for the defenses that target an inpainting editor.

The rule is the `sd_inpaint` generator's, so that a defense protects the
region the editor keeps: dlib's best face box (benchmark/models/faces.py),
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
            from benchmark.models.faces import FaceDetector

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
        from benchmark.models.faces import face_box_masks

        inside, _ = face_box_masks(self.detector, x, self.margin, self.no_face_box)
        return (inside if self.region == "face" else 1 - inside).to(x.device)


def shrink_region(region: np.ndarray, rng: np.random.Generator, strength: float = 1.1,
                  smoothness: float = 0.1, max_rounds: int = 15) -> np.ndarray:
    """DiffusionGuard's contour shrink: a random, smooth shrinking of a binary region.

    The region's radius r is that of the disc of equal area. A distance d ~ U(0, r)
    sets the largest point offset, int(d * strength) pixels; for a random number of
    rounds in [1, max_rounds), every point of the region's outer contour moves by
    independent integer offsets in that range, smoothed along the contour by a
    Gaussian of sigma r * smoothness; a point that leaves the current region is put
    back on the nearest contour point, so the region can only shrink; the moved
    contour is filled. Returns the new region (bool, same shape).
    """
    import cv2
    from scipy.ndimage import gaussian_filter1d

    region = region.astype(bool)
    area = int(region.sum())
    if area == 0:
        return region
    radius = math.sqrt(area / math.pi)
    reach = int(rng.uniform(0, radius) * strength)
    sigma = max(radius * smoothness, 1e-3)
    rounds = int(rng.uniform(1, max_rounds))
    current = region.copy()
    height, width = region.shape
    for _ in range(rounds):
        contours, _ = cv2.findContours(current.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        if not contours:
            break
        contour = max(contours, key=cv2.contourArea).reshape(-1, 2)
        offsets = rng.integers(-reach, reach + 1, size=contour.shape).astype(np.float64)
        offsets = gaussian_filter1d(offsets, sigma, axis=0, mode="wrap")
        moved = np.rint(contour + offsets).astype(np.int64)
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
