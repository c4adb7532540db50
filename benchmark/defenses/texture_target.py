"""The texture target that Mist and SDST pull an image's latent toward: the pattern image
(benchmark/defenses/assets/mist_pattern.png unless a path is given) and its VAE posterior.
"""

import torch
import torch.nn.functional as F

from benchmark.defenses.assets import default_pattern
from benchmark.images import from_pil, read_image
from benchmark.models.sd_ops import NoiseStreams, latent_moments


def load_pattern(path: str | None, size: tuple[int, int]) -> torch.Tensor:
    """The pattern image (1, 3, H, W) resized to the images' size (bicubic, as Mist's loader)."""
    img = read_image(path or default_pattern())
    return F.interpolate(from_pil(img)[None], size=size, mode="bicubic", align_corners=False,
                         antialias=True).clamp(0, 1)


class PatternLatent:
    """q(z | pattern) of the VAE; each call draws a fresh sample (scaled), as Mist's code does."""

    def __init__(self, vae, pattern: torch.Tensor, batch: int):
        with torch.no_grad():
            self.mean, self.std = (m.expand(batch, -1, -1, -1)
                                   for m in latent_moments(vae, pattern))
        self.scale = vae.config.scaling_factor

    def sample(self, noise: NoiseStreams) -> torch.Tensor:
        return (self.mean + self.std * noise.randn_like(self.mean)) * self.scale
