"""Low-frequency noise: random noise confined to low spatial frequencies, at an L-inf budget.

After Guo, Frank and Weinberger, "Low Frequency Adversarial Perturbation", UAI 2019
(arXiv:1809.08758), who restrict perturbations to the low-frequency DCT band because JPEG
and downscaling discard high frequencies. Here without an attack: uniform noise drawn on a
grid `factor` times coarser than the image, upsampled bicubically and scaled to the budget,
the random baseline a JPEG-robust defense should beat. Defaults: eps 8/255 like bench's
`noise` baseline; factor 8, JPEG's block size.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from benchmark.defenses.base import Defense, check_budget
from benchmark.errors import check
from benchmark.images import generator_for


class LowFrequencyNoise(Defense):
    name = "lowfreq_noise"
    version = "1"

    def __init__(self, eps: float = 8.0, factor: int = 8):
        self.eps = check_budget(self.name, eps)
        check(self.name, "factor", factor, isinstance(factor, int) and factor >= 1,
              "an integer >= 1 (how many times coarser than the image the noise is drawn)")
        self.factor = factor

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        h, w = x.shape[-2:]
        coarse = (max(1, h // self.factor), max(1, w // self.factor))
        noise = torch.stack([torch.rand(x.shape[1], *coarse, generator=generator_for(s))
                             for s in seeds]) * 2 - 1
        smooth = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
        peak = smooth.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + (smooth / peak * self.eps).to(x)).clamp(0, 1)
