"""AdvDM: maximise the latent diffusion model's denoising loss.

Liang, Wu, Hua, Zhang, Xue, Song, Xue, Ma, Guan. "Adversarial Example Does Good:
Preventing Painting Imitation from Diffusion Models via Adversarial Examples."
ICML 2023. arXiv:2302.04578.

    max_{||x_adv - x||_inf <= eps}  E_{t ~ U[0, T), eps ~ N(0, I)} ||eps_theta(z_t, t, c) - eps||^2
    with z = E(x_adv) a sample of the VAE posterior (scaled by 0.18215).

Defaults from the public code of the score-distillation follow-up, which runs
AdvDM as its baseline (xavihart/Diff-Protect, `attack.mode=advdm`, `g_mode=+`; values
and sources: configs/defense/advdm.yaml's card): sign steps at a constant step size,
uniform random start clipped to the image range before the first gradient
(advertorch's LinfPGDAttack: `clip_start`), one timestep and one noise draw per
iteration, the prompt it uses for portraits ("a portrait photo"). `direction: "-"`
gives AdvDM(-), which minimises the loss. Reference model: SD v1.4 (Diff-Protect's
README downloads sd-v1-4.ckpt as ckpt/model.ckpt), here CompVis/stable-diffusion-v1-4
in diffusers form; `model` takes any other SD 1.x. Reference precision: fp32 (its
LatentDiffusion is loaded in float32, no autocast).
"""

from collections.abc import Sequence

import torch

from benchmark.defenses.eot import build_eot
from benchmark.defenses.latent_diffusion import DiffusionDefense
from benchmark.defenses.pgd import LinfPGD
from benchmark.errors import check
from benchmark.models.sd_ops import NoiseStreams, alphas_cumprod, denoising_loss, encode

DIRECTIONS = ("+", "-")


class AdvDM(DiffusionDefense):
    name = "advdm"
    version = "2"  # 2: SD v1.4 by default (the reference's)

    def __init__(self, model: str = "CompVis/stable-diffusion-v1-4",
                 eps: float = 16.0, step: float = 1.0, iterations: int = 100,
                 random_start: bool = True, prompt: str = "a portrait photo",
                 direction: str = "+", eot: list | None = None, dtype: str = "fp32",
                 precision: str = "fp32", device: str = "auto", clip_start: bool = True):
        self.pgd = LinfPGD(eps, step, iterations, random_start, component=self.name,
                           transforms=build_eot(eot, self.name), clip_start=clip_start)
        check(self.name, "direction", direction, direction in DIRECTIONS, f"one of {DIRECTIONS}")
        check(self.name, "prompt", prompt, isinstance(prompt, str), "a string")
        self.prompt, self.direction = prompt, direction
        self._setup_model(model, dtype, device, precision)

    def semantic_loss(self, parts, x: torch.Tensor, noise: NoiseStreams, cond: torch.Tensor,
                      acp: torch.Tensor) -> torch.Tensor:
        """The denoising loss of x per image (one draw of z, t and eps)."""
        noise.begin()
        with self.autocast():
            return denoising_loss(parts, encode(parts.vae, x, noise), cond, noise, acp)

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        parts = self.parts
        x = x.to(self.device)
        noise = NoiseStreams(seeds, self.device, self.name)
        cond = self.prompt_condition(len(x))
        acp = alphas_cumprod(parts)
        sign = 1.0 if self.direction == "+" else -1.0
        return self.pgd.maximize(
            x, lambda v: sign * self.semantic_loss(parts, v, noise, cond, acp), seeds)
