"""BRISQUE no-reference image quality (Mittal, Moorthy & Bovik, "No-Reference Image Quality
Assessment in the Spatial Domain", IEEE TIP 2012) of the first image of the pair.

Score: roughly 0 (pristine) to 100 (badly distorted); lower is better. The
model is the support-vector regressor shipped in the `brisque` package
(PyPI `brisque`, rehanguha/brisque, Apache-2.0: `models/svm.txt`, an epsilon-SVR
with an RBF kernel trained on LIVE, and `models/normalize.pickle`, its feature
ranges). The 36 features are computed here in torch, batched, exactly as that
package defines them (so that its regressor applies), and its own scorer is the
reference in the tests (equal within 1e-4 on natural and mildly compressed
images; on images with exactly flat areas, e.g. JPEG at quality <= 30, the
reference's result depends on the sign of rounding noise and the two differ by
up to about 1 point):

- grey = 0.2125 R + 0.7154 G + 0.0721 B (scikit-image's rgb2gray), in [0, 1];
- MSCN coefficients (grey - mu) / (sigma + 1/255), mu and sigma from a 7x7
  Gaussian window (sigma 7/6) with zero padding; |grey - mu| < 1e-12 counts as 0
  (see scale_features);
- an asymmetric generalised Gaussian fit (moment matching, Lasmar et al. 2009)
  of the MSCN coefficients -> (alpha, (sl^2 + sr^2)/2), and of their products
  with the horizontal, vertical and two diagonal neighbours -> (alpha, mean,
  sl^2, sr^2) each: 18 features;
- the same on the image downscaled by 2 (bicubic, a = -0.75, as OpenCV's
  INTER_CUBIC, which the package uses): 36 features, scaled to [-1, 1] with the
  shipped ranges, then the SVR.

The second image of the pair is not used: on the `fidelity` pair the row is the
quality of T(x_adv), on `edit` the quality of G(T(x_adv)).
"""

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.errors import MissingPackageError
from benchmark.metrics.base import Metric
from benchmark.models import resolve_device, shared

GREY = (0.2125, 0.7154, 0.0721)
MSCN_C = 1 / 255
N_FEATURES = 36
FLAT = 1e-12


def model_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("brisque")
    path = Path(spec.origin).parent / "models" if spec else None
    if path is None or not (path / "svm.txt").is_file():
        raise MissingPackageError("the BRISQUE SVR model (svm.txt)", "brisque")
    return path


class SupportVectorRegressor:
    """An RBF epsilon-SVR read from a libsvm model file: f(x) = sum_i c_i K(s_i, x) - rho."""

    def __init__(self, path: Path):
        header, vectors, coefs = {}, [], []
        lines = iter(path.read_text().splitlines())
        for line in lines:
            if line.strip() == "SV":
                break
            key, *value = line.split()
            header[key] = value
        for line in lines:
            if not line.strip():
                continue
            coef, *entries = line.split()
            v = [0.0] * N_FEATURES  # libsvm writes only the non-zero entries
            for entry in entries:
                index, value = entry.split(":")
                v[int(index) - 1] = float(value)
            coefs.append(float(coef))
            vectors.append(v)
        if header.get("kernel_type") != ["rbf"] or header.get("svm_type") != ["epsilon_svr"]:
            raise ValueError(f"{path}: expected an RBF epsilon-SVR, got {header}")
        self.gamma = float(header["gamma"][0])
        self.rho = float(header["rho"][0])
        self.vectors = torch.tensor(vectors, dtype=torch.float64)
        self.coefs = torch.tensor(coefs, dtype=torch.float64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(x.double(), self.vectors.to(x.device)) ** 2
        return torch.exp(-self.gamma * d2) @ self.coefs.to(x.device) - self.rho


def load_brisque_model() -> tuple[SupportVectorRegressor, torch.Tensor, torch.Tensor]:
    path = model_dir()
    with open(path / "normalize.pickle", "rb") as f:
        ranges = pickle.load(f)  # the installed package's own file: {min_, max_}
    low = torch.tensor([float(v) for v in ranges["min_"]], dtype=torch.float64)
    high = torch.tensor([float(v) for v in ranges["max_"]], dtype=torch.float64)
    return SupportVectorRegressor(path / "svm.txt"), low, high


def _phi(alpha: torch.Tensor) -> torch.Tensor:
    """Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)): increases from 0 to 3/4 with the shape a."""
    return torch.exp(2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))


def solve_shape(ratio: torch.Tensor, iterations: int = 80) -> torch.Tensor:
    """The generalised Gaussian shape a with _phi(a) = ratio, by bisection on log a."""
    lo = torch.full_like(ratio, -5.0)
    hi = torch.full_like(ratio, 4.0)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = _phi(torch.exp(mid)) < ratio
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return torch.exp((lo + hi) / 2)


def aggd_fit(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Moment-matching AGGD fit per image of x (N, ...): shape, mean, left/right sigma^2."""
    x = x.flatten(1)
    neg, pos = x < 0, x >= 0
    left = (x * x * neg).sum(1) / neg.sum(1)
    right = (x * x * pos).sum(1) / pos.sum(1)
    gamma = left.sqrt() / right.sqrt()
    r = x.abs().mean(1) ** 2 / (x * x).mean(1)
    ratio = r * (gamma ** 3 + 1) * (gamma + 1) / (gamma ** 2 + 1) ** 2
    alpha = solve_shape(ratio)
    spread = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    mean = (right.sqrt() - left.sqrt()) * spread * torch.exp(torch.lgamma(2 / alpha)
                                                            - torch.lgamma(1 / alpha))
    return alpha, mean, left, right


def gaussian_window_7() -> torch.Tensor:
    r = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return (g / g.sum()).view(1, 1, 7, 7)


def scale_features(grey: torch.Tensor) -> torch.Tensor:
    """The 18 features of one scale, per image of grey (N, 1, H, W) float64."""
    window = gaussian_window_7().to(grey)
    mu = F.conv2d(grey, window, padding=3)
    sigma = (mu * mu - F.conv2d(grey * grey, window, padding=3)).abs().sqrt()
    centred = grey - mu
    # In exactly flat areas (e.g. JPEG blocks) grey - mu is 0 up to rounding noise whose sign
    # depends on the summation order (CPU vs GPU, scipy vs torch), yet the AGGD fit splits the
    # coefficients by sign: snap that noise to 0 so that the features are deterministic.
    centred = torch.where(centred.abs() < FLAT, torch.zeros_like(centred), centred)
    m = (centred / (sigma + MSCN_C))[:, 0]
    alpha, _, left, right = aggd_fit(m)
    features = [alpha, (left + right) / 2]
    for product in (m[:, :, :-1] * m[:, :, 1:], m[:, :-1, :] * m[:, 1:, :],
                    m[:, :-1, :-1] * m[:, 1:, 1:], m[:, 1:, :-1] * m[:, :-1, 1:]):
        features += list(aggd_fit(product))
    return torch.stack(features, dim=1)


def brisque_features(x: torch.Tensor) -> torch.Tensor:
    """(N, 36) features of RGB images x (NCHW in [0, 1])."""
    # float64 from the 8-bit values, as the reference reads an image file: MSCN coefficients
    # of flat areas are ~0, and their signs (which the AGGD fit counts) flip on float32 noise.
    x = torch.round(x.double().clamp(0, 1) * 255) / 255
    grey = (x[:, 0] * GREY[0] + x[:, 1] * GREY[1] + x[:, 2] * GREY[2]).unsqueeze(1)
    half = F.interpolate(grey, scale_factor=0.5, mode="bicubic", align_corners=False)
    return torch.cat([scale_features(grey), scale_features(half)], dim=1)


class BRISQUE(Metric):
    name = "brisque"
    version = "1"
    higher_is_better = False

    def __init__(self, device: str = "auto"):
        self.device = resolve_device(device)
        model_dir()  # fail at build time, not after the stages ran

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        svr, low, high = shared(("brisque-svr",), load_brisque_model)
        features = brisque_features(a.to(self.device))
        scaled = -1 + 2 * (features - low.to(features)) / (high - low).to(features)
        return svr(scaled).cpu()
