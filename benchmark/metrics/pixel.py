"""Full-reference pixel metrics: PSNR, SSIM (Wang et al. 2004) and MS-SSIM (Wang et al. 2003).

All three run batched in torch on `device` (the GPU where there is one) and
equal scikit-image's values, which stay available as `backend: skimage` for
PSNR and SSIM (MS-SSIM has no scikit-image counterpart). PSNR sums squared
differences in float64 (within 1e-7 dB of scikit-image). SSIM and MS-SSIM default to float32 (`dtype:
float32`), within 1e-5 of scikit-image's float64 on the shipped portraits
(largest difference measured: 1.3e-6, JPEG at quality 10-90, 64-512 px, both
windows); `dtype: float64` agrees to 1e-12 and is slower (torch has no fast
float64 depthwise convolution on CPUs).

SSIM, as scikit-image computes it with `gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1` (the settings of Wang et al. 2004):
an 11x11 Gaussian window (sigma 1.5 truncated at 3.5 sigma, radius 5),
population (co)variances, K1 = 0.01, K2 = 0.03; the SSIM map is averaged over
the pixels whose window lies inside the image (scikit-image crops 5 pixels at
each border), per RGB channel, and the three channel means are averaged
(no conversion to luminance). `gaussian_weights: false` gives scikit-image's
default instead: a 7x7 uniform window with sample covariances.

MS-SSIM follows Wang, Simoncelli & Bovik, "Multi-scale structural similarity
for image quality assessment", Asilomar 2003: 5 scales with exponents
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), the same Gaussian window at every
scale, 2x2 average pooling between scales (an odd last row/column is dropped),
contrast-structure terms at scales 1-4 and the full SSIM at scale 5, per
channel then averaged over channels. Negative terms are clamped to 0 before the
fractional powers (as pytorch-msssim does) so that the product stays real. The
smallest scale must still hold one 11x11 window, so images need a shorter side
of at least 11 * 2**4 = 176 pixels; smaller images get no MS-SSIM value (NaN,
so no row) and one warning.
"""

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.errors import check
from benchmark.metrics.base import Metric
from benchmark.models import resolve_device

log = logging.getLogger(__name__)

K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
BACKENDS = ("torch", "skimage")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CPU_BAND_ROWS = 48


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """1-D Gaussian taps as scipy.ndimage.gaussian_filter builds them (radius int(t*s + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _local_moments(a: torch.Tensor, b: torch.Tensor, taps: torch.Tensor) -> list[torch.Tensor]:
    """Window-weighted local E[a], E[b], E[a^2 + b^2], E[ab] (N, C, H', W') over the pixels
    whose window lies inside the image. SSIM needs only the sum of the two variances, so four
    filtered maps do the work of the usual five."""
    c = a.shape[1]
    k = len(taps)
    taps = taps.to(a)
    x = torch.cat([a, b, a * a + b * b, a * b], dim=1)
    if a.dtype == torch.float32:
        # oneDNN's depthwise convolution is several times faster in channels-last layout than
        # in NCHW (float64 has no such kernel); the elementwise SSIM formula is faster on
        # contiguous NCHW maps, so the result goes back.
        x = x.contiguous(memory_format=torch.channels_last)
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(4 * c, 1, 1, k).contiguous(), groups=4 * c)
    x = F.conv2d(x, taps.view(1, 1, k, 1).expand(4 * c, 1, k, 1).contiguous(), groups=4 * c)
    return list(x.contiguous().split(c, dim=1))


def ssim_maps(a: torch.Tensor, b: torch.Tensor, taps: torch.Tensor, cov_norm: float = 1.0,
              data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel SSIM and contrast-structure maps (N, C, H', W') over the valid region."""
    # Centring each image channel first keeps E[x^2] - E[x]^2 from cancelling badly in float32;
    # (co)variances do not change, and the means get their offsets back below.
    offset_a, offset_b = a.mean(dim=(2, 3), keepdim=True), b.mean(dim=(2, 3), keepdim=True)
    mu_a, mu_b, squares, ab = _local_moments(a - offset_a, b - offset_b, taps)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    # a and b enter symmetrically and every doubling is exact, so identical images give 1.
    mu_ab = mu_a * mu_b
    mu_sq = mu_a * mu_a + mu_b * mu_b
    cs = ab.sub_(mu_ab).mul_(2 * cov_norm).add_(c2)
    cs = cs.div_(squares.sub_(mu_sq).mul_(cov_norm).add_(c2))
    mu_a, mu_b = mu_a.add_(offset_a), mu_b.add_(offset_b)
    luminance = (mu_a * mu_b).mul_(2).add_(c1).div_(mu_a.square_().add_(mu_b.square_()).add_(c1))
    return luminance.mul_(cs), cs


def mean_ssim_cs(a: torch.Tensor, b: torch.Tensor, taps: torch.Tensor,
                 cov_norm: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image and channel (N, C), float64.

    On the CPU each image is processed in bands of rows (with the window's halo): the
    intermediate maps then stay in cache, which makes it 3-5 times faster than one pass
    over a batch of 512 px images. On a GPU the whole batch goes at once.
    """
    n, c, h, w = a.shape
    k = len(taps)
    valid_rows, valid_cols = h - k + 1, w - k + 1
    if a.device.type != "cpu":
        ssim, cs = ssim_maps(a, b, taps, cov_norm)
        return ssim.double().mean(dim=(2, 3)), cs.double().mean(dim=(2, 3))
    ssim_sum = torch.zeros(n, c, dtype=torch.float64)
    cs_sum = torch.zeros(n, c, dtype=torch.float64)
    for i in range(n):
        for top in range(0, valid_rows, CPU_BAND_ROWS):
            bottom = min(top + CPU_BAND_ROWS, valid_rows) + k - 1
            ssim, cs = ssim_maps(a[i:i + 1, :, top:bottom], b[i:i + 1, :, top:bottom], taps,
                                 cov_norm)
            ssim_sum[i] += ssim[0].double().sum(dim=(1, 2))
            cs_sum[i] += cs[0].double().sum(dim=(1, 2))
    count = valid_rows * valid_cols
    return ssim_sum / count, cs_sum / count


class _PixelMetric(Metric):
    """Shared options: where the torch path runs and which implementation to use."""

    def __init__(self, backend: str = "torch", device: str = "auto", dtype: str = "float64"):
        check(self.name, "backend", backend, backend in BACKENDS, f"one of {BACKENDS}")
        check(self.name, "dtype", dtype, dtype in DTYPES, f"one of {tuple(DTYPES)}")
        self.backend = backend
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]

    def _prepare(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a.to(self.device, self.dtype), b.to(self.device, self.dtype)

    @staticmethod
    def _hwc(x: torch.Tensor) -> np.ndarray:
        return x.permute(1, 2, 0).double().cpu().numpy()


class PSNR(_PixelMetric):
    """Peak signal-to-noise ratio in dB, data range 1; identical images give inf.

    Differences are taken in `dtype` and their squares summed in float64: float32 (default)
    is within 1e-7 dB of scikit-image's float64 on 8-bit images (measured 2.7e-8 on the
    portraits), float64 within 1e-12."""

    name = "psnr"
    version = "2"  # float64 sums of float32 terms (PSNR); four filtered maps (SSIM)
    higher_is_better = True

    def __init__(self, backend: str = "torch", device: str = "auto", dtype: str = "float32"):
        super().__init__(backend, device, dtype)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.backend == "skimage":
            from skimage.metrics import peak_signal_noise_ratio

            with np.errstate(divide="ignore"):
                return torch.tensor([peak_signal_noise_ratio(self._hwc(ai), self._hwc(bi),
                                                             data_range=1.0)
                                     for ai, bi in zip(a, b)], dtype=torch.float64)
        a, b = self._prepare(a, b)
        if a.device.type == "cpu":
            # One image at a time: a batch-sized temporary costs more in page faults than the
            # arithmetic (0.3 vs 4 ms per 512 px image).
            sse = torch.stack([(ai - bi).square_().sum(dtype=torch.float64)
                               for ai, bi in zip(a, b)])
        else:
            sse = (a - b).square_().sum(dim=(1, 2, 3), dtype=torch.float64)
        return (10 * torch.log10(a[0].numel() / sse)).cpu()


class SSIM(_PixelMetric):
    name = "ssim"
    version = "2"  # float64 sums of float32 terms (PSNR); four filtered maps (SSIM)
    higher_is_better = True

    def __init__(self, gaussian_weights: bool = True, backend: str = "torch", device: str = "auto",
                 dtype: str = "float32"):
        super().__init__(backend, device, dtype)
        check(self.name, "gaussian_weights", gaussian_weights, isinstance(gaussian_weights, bool),
              "true (Wang et al. 11x11 Gaussian window) or false (7x7 uniform window)")
        self.gaussian_weights = gaussian_weights
        if gaussian_weights:
            self.taps, self.cov_norm = gaussian_window(1.5), 1.0
        else:
            self.taps, self.cov_norm = torch.full((7,), 1 / 7, dtype=torch.float64), 49 / 48

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.backend == "skimage":
            return self._skimage(a, b)
        a, b = self._prepare(a, b)
        if min(a.shape[-2:]) < len(self.taps):
            raise ValueError(f"ssim: images of {tuple(a.shape[-2:])} px are smaller than the "
                             f"{len(self.taps)}x{len(self.taps)} window")
        ssim, _ = mean_ssim_cs(a, b, self.taps, self.cov_norm)
        return ssim.mean(dim=1).cpu()

    def _skimage(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        from skimage.metrics import structural_similarity

        options = ({"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
                   if self.gaussian_weights else {})
        return torch.tensor([structural_similarity(self._hwc(ai), self._hwc(bi), data_range=1.0,
                                                   channel_axis=2, **options)
                             for ai, bi in zip(a, b)], dtype=torch.float64)


class MSSSIM(_PixelMetric):
    name = "ms_ssim"
    version = "2"  # float64 sums of float32 terms (PSNR); four filtered maps (SSIM)
    higher_is_better = True
    MIN_SIZE = 11 * 2 ** (len(MS_SSIM_WEIGHTS) - 1)

    def __init__(self, device: str = "auto", dtype: str = "float32"):
        super().__init__("torch", device, dtype)
        self.taps = gaussian_window(1.5)
        self.weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
        self.warned_small = False

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if min(a.shape[-2:]) < self.MIN_SIZE:
            if not self.warned_small:
                self.warned_small = True
                log.warning("ms_ssim: unavailable for %dx%d images; it needs a shorter side of at "
                            "least %d px (5 scales of an 11x11 window)", *a.shape[-2:],
                            self.MIN_SIZE)
            return torch.full((len(a),), math.nan, dtype=torch.float64)
        a, b = self._prepare(a, b)
        terms = []
        for scale in range(len(MS_SSIM_WEIGHTS)):
            if scale:
                a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
            ssim, cs = mean_ssim_cs(a, b, self.taps)  # (N, C) each
            terms.append(ssim if scale == len(MS_SSIM_WEIGHTS) - 1 else cs)
        stacked = torch.stack(terms, dim=-1).clamp_min(0)  # (N, C, scales)
        per_channel = (stacked ** self.weights.to(stacked)).prod(dim=-1)
        return per_channel.mean(dim=1).cpu()
