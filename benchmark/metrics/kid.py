"""Kernel Inception Distance (Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs",
ICLR 2018), on the same TF-Inception features and clean-fid preprocessing as FID (fid.py).

KID is the squared MMD between the two feature sets under the cubic polynomial
kernel k(x, y) = (x.y / d + 1)^3, d = 2048, with the unbiased estimator

    KID = sum_{i!=j} [k(a_i, a_j) + k(b_i, b_j)] / (m (m - 1)) - 2 sum_{i,j} k(a_i, b_j) / m^2

averaged, as in the paper and in clean-fid's `kernel_distance`, over `subsets`
random subsets of m = min(n_a, n_b, subset_size) images (defaults 100 and 1000,
clean-fid's). When neither set has more images than `subset_size` (a job's usual
case) the value is computed once on the whole sets: for two sets of the same
size every clean-fid subset is the whole set, so this equals clean-fid's value;
for sets of different sizes it is the unbiased estimator with each set's own
normalisation (clean-fid would subsample the larger set).

Standard error: the metric `kid` with `output: std_error` (shipped as the row
`kid_se`, in the same configs/metric/kid.yaml, so `metric=[kid]` writes both rows;
the features are extracted once for both) is the jackknife standard error of
the estimate over images: delete-one over the image pairs (the runner's two sets
are the same images before/after, so a pair is deleted together) when the two
sets have the same size, the two-sample jackknife otherwise. For sets larger
than `subset_size`, the standard deviation of the subset estimates scaled by
sqrt(m / n) (the variance of the MMD U-statistic falls as 1/m).

KID is unbiased for two independent samples; a set compared with itself (or
with a nearly identical copy, e.g. x_adv vs x) is not an independent sample: the
cross term then contains k(a_i, a_i), and the value is slightly negative rather
than 0. Values at or below about one standard error mean "indistinguishable".

Set size: KID is unbiased at every size, so it is comparable across set sizes,
unlike FID; it needs at least 2 images per set (3 for its standard error) and
otherwise writes no row. Below 50 images the standard error is usually of the
order of the value itself: a warning says so (a threshold chosen here, not from
the paper), and `kid_se` tells how much to trust it.
"""

import logging
import math

import numpy as np

from benchmark.errors import check
from benchmark.metrics.fid import InceptionSetMetric

log = logging.getLogger(__name__)
OUTPUTS = ("value", "std_error")
MIN_MEANINGFUL = 50


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    m = len(a)
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    within = (kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (m * (m - 1))
    return float(within - 2 * kab.sum() / m ** 2)


def _offdiag_sum_without(k: np.ndarray) -> tuple[float, np.ndarray]:
    """Sum of the off-diagonal entries of k, and that sum with row/column i removed, per i."""
    off = k.sum() - np.trace(k)
    rows = k.sum(0) + k.sum(1) - 2 * np.diag(k)
    return off, off - rows


def jackknife_std_error(a: np.ndarray, b: np.ndarray) -> float:
    """Delete-one jackknife standard error of mmd2_unbiased(a, b), in closed form (O(n^2))."""
    na, nb = len(a), len(b)
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    aa, aa_del = _offdiag_sum_without(kaa)
    bb, bb_del = _offdiag_sum_without(kbb)
    ab = kab.sum()
    if na == nb:
        n = na
        ab_del = ab - kab.sum(1) - kab.sum(0) + np.diag(kab)
        values = (aa_del + bb_del) / ((n - 1) * (n - 2)) - 2 * ab_del / (n - 1) ** 2
        return float(math.sqrt((n - 1) / n * ((values - values.mean()) ** 2).sum()))
    # The unequal-size estimator: within-set terms over each set's own pairs.
    va = aa_del / ((na - 1) * (na - 2)) + bb / (nb * (nb - 1)) - 2 * (ab - kab.sum(1)) / ((na - 1) * nb)
    vb = aa / (na * (na - 1)) + bb_del / ((nb - 1) * (nb - 2)) - 2 * (ab - kab.sum(0)) / (na * (nb - 1))
    var = ((na - 1) / na * ((va - va.mean()) ** 2).sum()
           + (nb - 1) / nb * ((vb - vb.mean()) ** 2).sum())
    return float(math.sqrt(var))


def mmd2_unequal(a: np.ndarray, b: np.ndarray) -> float:
    """The unbiased MMD^2 for sets of different sizes (equal to mmd2_unbiased when equal)."""
    na, nb = len(a), len(b)
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (na * (na - 1))
                 + (kbb.sum() - np.trace(kbb)) / (nb * (nb - 1)) - 2 * kab.sum() / (na * nb))


class KID(InceptionSetMetric):
    name = "kid"
    version = "1"
    higher_is_better = False

    def __init__(self, encoder: dict, resize: str = "clean", output: str = "value",
                 subsets: int = 100, subset_size: int = 1000, seed: int = 0):
        check(self.name, "output", output, output in OUTPUTS, f"one of {OUTPUTS}")
        check(self.name, "subsets", subsets, isinstance(subsets, int) and subsets >= 1,
              "an integer >= 1")
        check(self.name, "subset_size", subset_size,
              isinstance(subset_size, int) and subset_size >= 2, "an integer >= 2")
        self.output, self.subsets, self.subset_size, self.seed = output, subsets, subset_size, seed
        self.higher_is_better = False if output == "value" else None
        self._use_features(encoder, resize)

    def _subset_values(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        m = min(len(fa), len(fb), self.subset_size)
        return np.array([mmd2_unbiased(fa[rng.choice(len(fa), m, replace=False)],
                                       fb[rng.choice(len(fb), m, replace=False)])
                         for _ in range(self.subsets)])

    def compute(self) -> float | None:
        fa, fb = self.sets()
        n = min(len(fa), len(fb))
        needed = 2 if self.output == "value" else 3
        if n < needed:
            log.warning("%s: unavailable for a set of %d image(s); it needs at least %d",
                        self.name, n, needed)
            return None
        if n < MIN_MEANINGFUL and self.output == "value" and not self.warned_small:
            self.warned_small = True
            log.warning("%s: %d images per set (< %d): KID is unbiased but its standard error is "
                        "large at this size; read it together with kid_se", self.name, n,
                        MIN_MEANINGFUL)
        if max(len(fa), len(fb)) <= self.subset_size:
            if self.output == "value":
                return mmd2_unequal(fa, fb)
            return jackknife_std_error(fa, fb)
        values = self._subset_values(fa, fb)
        if self.output == "value":
            return float(values.mean())
        m = min(n, self.subset_size)
        return float(values.std(ddof=1) * math.sqrt(m / n)) if len(values) > 1 else None
