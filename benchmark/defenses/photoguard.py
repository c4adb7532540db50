"""PhotoGuard encoder attack.

Salman, Khaddaj, Leclerc, Ilyas, Madry. "Raising the Cost of Malicious AI-Powered
Image Editing." ICML 2023. arXiv:2302.06588.

Minimises ||E(x_adv) - z_target|| by L-infinity PGD against an image encoder E.
Defaults from the img2img demo of MadryLab/photoguard: eps 0.06 and step 0.02
in [-1, 1] units (7.65 and 2.55 out of 255), step decaying linearly to 1/100 of
itself, 1000 iterations, uniform random start, target latent 0 (the inpainting
demo targets the latent of a target image: `target: image`).

The encoder is pluggable (config group `encoder`): the SD VAE encoder for real
runs, the TF-Inception for the offline surrogate experiment.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from benchmark.build import build
from benchmark.defenses.base import Defense
from benchmark.defenses.pgd import LinfPGD
from benchmark.errors import check
from benchmark.images import from_pil, read_image

TARGETS = ("zero", "image")


class PhotoGuardEncoder(Defense):
    name = "photoguard_encoder"

    def __init__(self, encoder: dict, eps: float = 7.65, step: float = 2.55,
                 iterations: int = 1000, random_start: bool = True, schedule: str = "linear",
                 final_step_fraction: float = 0.01, target: str = "zero",
                 target_image: str | None = None):
        self.pgd = LinfPGD(eps, step, iterations, random_start, schedule, final_step_fraction,
                           component=self.name)
        check(self.name, "target", target, target in TARGETS, f"one of {TARGETS}")
        check(self.name, "target_image", target_image, target == "zero" or target_image,
              "a path to an image when target=image")
        self.target = target
        self.target_image = from_pil(read_image(target_image)) if target == "image" else None
        self.encoder = build(encoder, where=f"{self.name}.encoder")

    def target_latent(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.target == "zero":
                return torch.zeros_like(self.encoder(x[:1]))
            target = F.interpolate(self.target_image[None], size=x.shape[-2:], mode="bicubic",
                                   antialias=True).clamp(0, 1)
            return self.encoder(target.to(x.device))

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        z_target = self.target_latent(x)

        def distance(x_adv: torch.Tensor) -> torch.Tensor:
            return (self.encoder(x_adv) - z_target).flatten(1).norm(dim=1)

        return self.pgd.minimize(x, distance, seeds)
