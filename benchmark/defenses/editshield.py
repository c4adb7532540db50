"""EditShield: shift the latent an instruction-guided editor conditions on.

Chen, Jin, Liu, Chen, Wang, Sun. "EditShield: Protecting Unauthorized Image
Editing by Instruction-guided Diffusion Models." ECCV 2024. arXiv:2311.12066.

    minimise  E_{T ~ EOT} [ -MSE(emb(T(x_adv)), emb(x)) ]  +  beta * MSE(x_adv, x)

where emb(x) is what InstructPix2Pix's UNet reads: the noised image latent at a
random timestep concatenated with the image-conditioning latent (both drawn
from the VAE posterior), and the expectation runs over centre crops, Gaussian
blur and rotations (the paper's three EOT settings), one drawn per step.

Defaults from Allen-piexl/Editshield (EOT_Center.py, EOT_Gaussion.py,
Functions.py `get_emb`): Adam with torch's defaults (lr 1e-3 on [0, 1] pixels),
30 iterations, beta 0.1, no budget enforced (its `pgd_eps` is never applied;
pixels are kept in [0, 1] here), t ~ U[0, 1000), timbrooks/instruct-pix2pix.
EOT: Gaussian blur sigma 1.5 (its kernel was 5 px; the kornia twin here uses
OpenCV's kernel size for sigma 1.5), rotation by up to 5 degrees (its script
rotates by 5), centre crop keeping 80-100 % of the side (its crop is a square
centre crop, an identity on square inputs; the range is bench's choice).
One deliberate difference: images enter the VAE in [-1, 1], as SD's VAE expects
(the public script passes [0, 1] tensors).
"""

from collections.abc import Sequence

import torch

from benchmark.defenses.eot import build_eot
from benchmark.defenses.latent_diffusion import (
    DiffusionDefense,
    NoiseStreams,
    add_noise,
    alphas_cumprod,
    encode,
)
from benchmark.defenses.pgd import PGD
from benchmark.errors import check

DEFAULT_EOT = (
    {"_target_": "benchmark.defenses.eot.DiffCenterCrop", "min_fraction": 0.8},
    {"_target_": "benchmark.transforms.filters.GaussianBlur", "sigma": 1.5, "library": "kornia"},
    {"_target_": "benchmark.defenses.eot.DiffRotate", "degrees": 5.0},
)


class EditShield(DiffusionDefense):
    name = "editshield"
    model_parts = ("vae", "scheduler")

    def __init__(self, model: str = "timbrooks/instruct-pix2pix", eps: float | None = None,
                 lr: float = 1e-3, iterations: int = 30, beta: float = 0.1,
                 eot: list | None = DEFAULT_EOT, dtype: str = "fp32", precision: str = "fp32",
                 device: str = "auto"):
        check(self.name, "lr", lr, isinstance(lr, (int, float)) and 0 < lr <= 1,
              "an Adam learning rate in (0, 1] on [0, 1] pixels")
        check(self.name, "beta", beta, isinstance(beta, (int, float)) and beta >= 0,
              "a weight >= 0 of the perceptual (pixel MSE) term")
        self.pgd = PGD(eps, lr * 255, iterations, "none" if eps is None else "linf",
                       random_start=False, optimizer="adam",
                       transforms=build_eot(list(eot or []), self.name), component=self.name)
        self.beta = float(beta)
        self._setup_model(model, dtype, device, precision)

    def embedding(self, parts, x: torch.Tensor, noise: NoiseStreams,
                  acp: torch.Tensor) -> torch.Tensor:
        """InstructPix2Pix's UNet input without the mask: [z_t, E(x)] (one draw)."""
        z = encode(parts.vae, x, noise)
        t = noise.randint(len(acp))
        z_t = add_noise(acp, z, noise.randn_like(z), t)
        return torch.cat([z_t, encode(parts.vae, x, noise, scaled=False)], dim=1)

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        parts = self.parts
        x = x.to(self.device)
        acp = alphas_cumprod(parts)
        with torch.no_grad(), self.autocast():
            target = self.embedding(parts, x, NoiseStreams(seeds, self.device, "editshield/clean"),
                                    acp)
        noise = NoiseStreams(seeds, self.device, self.name)

        def shift(v: torch.Tensor) -> torch.Tensor:
            noise.begin()
            with self.autocast():
                emb = self.embedding(parts, v, noise, acp)
            return -(emb - target).pow(2).flatten(1).mean(1)

        def perceptual(v: torch.Tensor) -> torch.Tensor:
            return self.beta * (v - x).pow(2).flatten(1).mean(1)

        return self.pgd.minimize(x, shift, seeds, penalty=perceptual)
