"""Full-reference pixel metrics: PSNR and SSIM, with scikit-image as the reference.

SSIM follows Wang et al. 2004 by default: 11x11 Gaussian window with sigma 1.5,
population covariances, K1=0.01, K2=0.03, data_range 1, computed per channel
and averaged over the three RGB channels (scikit-image's `channel_axis`).
`gaussian_weights: false` gives scikit-image's default 7x7 uniform window.
"""

import numpy as np
import torch

from benchmark.metrics.base import Metric


class PSNR(Metric):
    """Peak signal-to-noise ratio in dB, data range 1; identical images give inf."""

    name = "psnr"
    higher_is_better = True

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mse = ((a.double() - b.double()) ** 2).flatten(1).mean(dim=1)
        return 10 * torch.log10(1.0 / mse)


class SSIM(Metric):
    name = "ssim"
    higher_is_better = True

    def __init__(self, gaussian_weights: bool = True):
        self.options = (
            dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            if gaussian_weights else {}
        )

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        from skimage.metrics import structural_similarity

        values = [
            structural_similarity(ai.permute(1, 2, 0).double().cpu().numpy(),
                                  bi.permute(1, 2, 0).double().cpu().numpy(),
                                  data_range=1.0, channel_axis=2, **self.options)
            for ai, bi in zip(a, b)
        ]
        return torch.tensor(np.array(values), dtype=torch.float64)
