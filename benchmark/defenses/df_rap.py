"""DF-RAP: a robust adversarial perturbation that survives social-network compression.

Qu, Xi, Lu, Luo, Wang and Li, "DF-RAP: A Robust Adversarial Perturbation for
Defending against Deepfakes in Real-world Social Network Scenarios", IEEE TIFS 19,
2024. Defaults from github.com/ZOMIN28/DF_RAP, in the [-1, 1] units of its images:

- attack.py `LinfPGDAttack` (values, units and lines: configs/defense/df_rap.yaml's
  card): sign steps, uniform random start; the first gradient is taken at X_nat + delta_0
  before any clipping (`clip_start: false`; the first step's projection clips).
- loss `mse_loss(G(ComG(x_adv), c), G(x, c))`, maximised: the editor sees the
  perturbed image after ComGAN, a U-Net trained to imitate the compression of online
  social networks (net/ComGAN.py `ComGenerator(dim_in=3, dim_out=32)`; the demo puts it
  in eval() mode, so its instance norms use their running statistics). One target c
  per attack (`adv_attack(..., c_trg=...)`), here the job generator's target.
- ComGAN's weights ship as a pickled module (`checkpoints/ComGAN/ComG_model.pt`,
  entry `ComG`); bench loads only plain state dicts, so convert it once where you trust
  the file: `torch.save(torch.load("ComG_model.pt")["ComG"].state_dict(), "comgan.pth")`
  and set `defense.comgan_weights=comgan.pth`. The names are ComGenerator's
  (`conv1.0.weight`, `conv2.0.main.1.running_mean`, `conv2.0.conv1x1.weight`,
  `upsample54.0.weight`, `conv0.0.bias`, ...).
- ComGenerator also has an `isJPEG` flag (net/ComGAN.py `ComGenerator(dim_in, dim_out,
  isJPEG=False)`): when true, its forward follows the U-Net with a differentiable JPEG
  (mlomnitz/DiffJPEG at 256x256) at a quality drawn from data/qf.txt (`qf_sample`), none at
  quality 100. A state dict holds weights only and drops that flag, so check it where you
  convert: `torch.load("ComG_model.pt")["ComG"].isJPEG`, and set `defense.comgan_jpeg` to
  it (default false, ComGenerator's default). With `comgan_jpeg: true` the ComGAN output
  goes through the project's differentiable JPEG (kornia's `jpeg_codec_differentiable`,
  as the fallback below) at a quality drawn from the same list, none at 100. The editor
  sees the JPEG output in [-1, 1], as in the reference, whose DiffJPEG returns
  `(image - 0.5) * 2` (DiffJPEG/modules/decompression.py). Deviation: the quality is
  drawn per image and gradient step (the reference: one per forward for the batch).

DEVIATION without ComGAN weights (the default offline): the surrogate is kornia's
differentiable JPEG (Diff-JPEG, `jpeg_codec_differentiable`) at a quality factor drawn
per image and gradient step from DF-RAP's social-network list (data/qf.txt: 71..100 with
their frequencies, as ComGAN's own `qf_sample`; quality 100 = no compression, as there).
The job log says which surrogate ran.

Reference model: StarGAN's CelebA generator (and SimSwap, which bench does not have), the
`editor`, with DF_RAP's ComGAN. Reference precision: fp32.
"""

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from benchmark.defenses.gan_editors import GanEditorDefense
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.precision import FP32
from benchmark.errors import check
from benchmark.models import shared
from benchmark.models.checkpoints import load_network, resolve_weights
from benchmark.transforms.jpeg_social import DFRAP_FREQUENCIES, DFRAP_QUALITIES

log = logging.getLogger(__name__)


class ResidualStage(nn.Module):
    """ComGAN's residual block: two 3x3 conv + InstanceNorm, plus a 1x1 conv shortcut."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(dim_out, affine=True, track_running_stats=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim_out, dim_out, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(dim_out, affine=True, track_running_stats=True))
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x) + self.main(x)


def _up(dim_in: int, dim_out: int) -> nn.Module:
    return nn.Sequential(nn.ConvTranspose2d(dim_in, dim_out, 4, 2, 1, bias=False), nn.ReLU())


class ComGAN(nn.Module):
    """DF-RAP's compression surrogate: a 5-level U-Net on [-1, 1] images, tanh output."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, dim, 3, 1, 1, bias=False))
        self.conv2 = nn.Sequential(ResidualStage(dim, dim * 2))
        self.conv3 = nn.Sequential(ResidualStage(dim * 2, dim * 4))
        self.conv4 = nn.Sequential(ResidualStage(dim * 4, dim * 8))
        self.conv5 = nn.Sequential(ResidualStage(dim * 8, dim * 16))
        self.conv4m = nn.Sequential(ResidualStage(dim * 16, dim * 8))
        self.conv3m = nn.Sequential(ResidualStage(dim * 8, dim * 4))
        self.conv2m = nn.Sequential(ResidualStage(dim * 4, dim * 2))
        self.conv1m = nn.Sequential(ResidualStage(dim * 2, dim))
        self.conv0 = nn.Sequential(nn.Conv2d(dim, 3, 3, 1, 1), nn.Tanh())
        self.max_pool = nn.MaxPool2d(2, 2)
        self.upsample54 = _up(dim * 16, dim * 8)
        self.upsample43 = _up(dim * 8, dim * 4)
        self.upsample32 = _up(dim * 4, dim * 2)
        self.upsample21 = _up(dim * 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        c2 = self.conv2(self.max_pool(c1))
        c3 = self.conv3(self.max_pool(c2))
        c4 = self.conv4(self.max_pool(c3))
        c5 = self.conv5(self.max_pool(c4))
        m4 = self.conv4m(torch.cat([self.upsample54(c5), c4], 1))
        m3 = self.conv3m(torch.cat([self.upsample43(m4), c3], 1))
        m2 = self.conv2m(torch.cat([self.upsample32(m3), c2], 1))
        m1 = self.conv1m(torch.cat([self.upsample21(m2), c1], 1))
        return self.conv0(m1)


class CompressionSurrogate:
    """Differentiable stand-in for social-network compression, t(x, seeds) -> x in [0, 1]."""

    differentiable = True

    def __init__(self, comgan: nn.Module | None, qualities: Sequence[int],
                 frequencies: Sequence[float], comgan_jpeg: bool = False):
        self.comgan = comgan
        self.comgan_jpeg = comgan_jpeg
        self.qualities = list(qualities)
        total = float(sum(frequencies))
        self.frequencies = [f / total for f in frequencies]

    def quality_for(self, seed: int) -> int:
        return int(np.random.default_rng(seed).choice(self.qualities, p=self.frequencies))

    def __call__(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if self.comgan is None:
            return self.jpeg(x, seeds)
        y = (self.comgan(x * 2 - 1) + 1) / 2
        return self.jpeg(y.clamp(0, 1), seeds) if self.comgan_jpeg else y

    def jpeg(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Differentiable JPEG at each image's drawn quality; quality 100 leaves it as is."""
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.tensor([float(self.quality_for(s)) for s in seeds], device=x.device)
        compressed = jpeg_codec_differentiable(x, quality).clamp(0, 1)
        untouched = (quality >= 100).view(-1, 1, 1, 1)
        return torch.where(untouched, x, compressed)


class DFRAP(GanEditorDefense):
    name = "df_rap"
    version = "2"  # 2: the first gradient at the unclipped random start (clip_start)
    reference_precision = FP32

    def __init__(self, editor: dict, condition="all", eps: float = 6.375, step: float = 1.275,
                 iterations: int = 10, random_start: bool = True,
                 comgan_weights: str | None = None, comgan_dim: int = 32,
                 comgan_jpeg: bool = False,
                 qualities: list[int] = DFRAP_QUALITIES,
                 frequencies: list[float] = DFRAP_FREQUENCIES, clip_start: bool = False):
        check(self.name, "qualities", qualities, isinstance(qualities, (list, tuple))
              and len(qualities) > 0 and all(isinstance(q, int) and 1 <= q <= 100
                                             for q in qualities),
              "a non-empty list of JPEG qualities in 1..100")
        check(self.name, "frequencies", frequencies, isinstance(frequencies, (list, tuple))
              and len(frequencies) == len(qualities) and all(f >= 0 for f in frequencies)
              and sum(frequencies) > 0, f"{len(qualities)} non-negative numbers, one per quality")
        check(self.name, "comgan_dim", comgan_dim, isinstance(comgan_dim, int) and comgan_dim >= 1,
              "an integer >= 1 (32 in DF-RAP's ComGAN)")
        check(self.name, "comgan_jpeg", comgan_jpeg, isinstance(comgan_jpeg, bool),
              "true or false (the isJPEG flag of DF-RAP's ComG_model.pt, see df_rap.py)")
        self.comgan_weights = comgan_weights
        path = None if comgan_weights in (None, "") else resolve_weights(
            comgan_weights, f"{self.name}.comgan_weights",
            "convert DF-RAP's checkpoints/ComGAN/ComG_model.pt to a state dict (see "
            "benchmark/defenses/df_rap.py)")
        super().__init__(editor, condition)
        comgan = None
        if comgan_weights not in (None, ""):
            key = ("comgan", str(path or "random"), comgan_dim, str(self.editor.device))
            comgan = shared(key, lambda: load_network(lambda: ComGAN(comgan_dim), path)
                            .to(self.editor.device))
            self.surrogate_name = f"ComGAN ({comgan_weights})" + (
                ", then differentiable JPEG (isJPEG)" if comgan_jpeg else "")
        else:
            self.surrogate_name = "kornia differentiable JPEG at DF-RAP's social-network qualities"
            self.notice = (f"df_rap: no ComGAN weights (defense.comgan_weights), so it optimises "
                           f"through {self.surrogate_name} instead of DF-RAP's learned ComGAN "
                           f"surrogate")
            log.warning(self.notice)
        self.pgd = LinfPGD(eps, step, iterations, random_start, component=self.name,
                           transforms=[CompressionSurrogate(comgan, qualities, frequencies,
                                                            comgan_jpeg)],
                           clip_start=clip_start)

    def protect(self, x: torch.Tensor, seeds: Sequence[int],
                attributes: list[dict] | None = None) -> torch.Tensor:
        distance, on_step = self.edit_distance(x, attributes)
        return self.pgd.maximize(x, distance, seeds, on_step=on_step)
