"""SDS(+), SDS(-) and SDST: score-distillation protections, gradient through the encoder only.

Xue, Liang, Wu, Chen. "Toward Effective Protection Against Diffusion-Based
Mimicry through Score Distillation." ICLR 2024. arXiv:2311.12832.

AdvDM's gradient backpropagates through the UNet. Score distillation drops the
UNet's Jacobian: with z = E(x_adv) and z_t its noised version,

    grad_x  ~=  (dz/dx)^T  (eps_theta(z_t, t, c) - eps),    t ~ U[0, T)

computed here as the gradient of the surrogate <stopgrad(eps_theta - eps), z>,
so the UNet runs without autograd (half the memory, about twice the speed).
SDS(+) ascends this direction (as AdvDM), SDS(-) descends it (the paper's
recommendation, pulling the latent toward the model's mode). SDST adds the
textural loss of Mist toward a target pattern:

    minimise  ||z' - E(pattern)||^2  -  s * rate * <stopgrad(eps_theta - eps), z>,
    s = +1 for (+), -1 for (-)

where z' is a second posterior sample of E(x_adv): `pgd_sds` encodes x_adv again for
its textural loss (`x_target`), after drawing the pattern's sample, and so do we
(seeded like every other draw).

Defaults from the paper's code (xavihart/Diff-Protect, configs/attack/base.yaml
and code/attacks.py `pgd_sds`; values and sources: configs/defense/sds.yaml's card): sign
steps at a constant step, no random start, one timestep and noise draw per
iteration, the target rate of SDST (its `target_rate`), the prompt it uses for
portraits. Reference model: SD v1.4
(Diff-Protect's README downloads sd-v1-4.ckpt as ckpt/model.ckpt), here
CompVis/stable-diffusion-v1-4 in diffusers form; `model` takes any other SD 1.x.
Reference precision: fp32 (its LatentDiffusion is loaded in float32, no autocast).
"""

from collections.abc import Sequence

import torch

from benchmark.defenses.eot import build_eot
from benchmark.defenses.latent_diffusion import DiffusionDefense
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.texture_target import PatternLatent, load_pattern
from benchmark.errors import check
from benchmark.models.sd_ops import NoiseStreams, add_noise, alphas_cumprod, encode, predict_noise

DIRECTIONS = ("+", "-")


class ScoreDistillation(DiffusionDefense):
    name = "sds"
    version = "2"  # 2: SDST's textural term on a second posterior sample; SD v1.4 by default

    def __init__(self, model: str = "CompVis/stable-diffusion-v1-4",
                 eps: float = 16.0, step: float = 1.0, iterations: int = 100,
                 random_start: bool = False, direction: str = "-", textural: bool = False,
                 rate: float = 5.0, pattern: str | None = None,
                 prompt: str = "a portrait photo", eot: list | None = None,
                 dtype: str = "fp32", precision: str = "fp32", device: str = "auto"):
        self.pgd = LinfPGD(eps, step, iterations, random_start, component=self.name,
                           transforms=build_eot(eot, self.name))
        check(self.name, "direction", direction, direction in DIRECTIONS, f"one of {DIRECTIONS}")
        check(self.name, "rate", rate, isinstance(rate, (int, float)) and rate > 0, "a weight > 0")
        check(self.name, "textural", textural, isinstance(textural, bool), "true or false")
        check(self.name, "prompt", prompt, isinstance(prompt, str), "a string")
        self.direction, self.textural, self.rate, self.prompt = direction, textural, rate, prompt
        self.pattern_path = pattern
        if textural:
            load_pattern(pattern, (8, 8))  # an unreadable pattern stops the job here
        self._setup_model(model, dtype, device, precision)

    def score_residual(self, parts, z: torch.Tensor, cond: torch.Tensor, noise: NoiseStreams,
                       acp: torch.Tensor) -> torch.Tensor:
        """eps_theta(z_t, t, c) - eps for one draw, with no autograd through the UNet."""
        with torch.no_grad():
            t = noise.randint(len(acp))
            eps = noise.randn_like(z)
            return predict_noise(parts.unet, add_noise(acp, z.detach(), eps, t), t, cond) - eps

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        parts = self.parts
        x = x.to(self.device)
        noise = NoiseStreams(seeds, self.device, self.name)
        cond = self.prompt_condition(len(x))
        acp = alphas_cumprod(parts)
        sign = 1.0 if self.direction == "+" else -1.0
        target = None
        if self.textural:
            pattern = load_pattern(self.pattern_path, tuple(x.shape[-2:])).to(self.device)
            target = PatternLatent(parts.vae, pattern, len(x))

        def loss(v: torch.Tensor) -> torch.Tensor:
            noise.begin()
            with self.autocast():
                z = encode(parts.vae, v, noise)
                residual = self.score_residual(parts, z, cond, noise, acp)
            surrogate = (residual * z).flatten(1).sum(1)
            if target is None:
                return -sign * surrogate
            pattern_z = target.sample(noise)  # the pattern's sample, then x_adv's second one
            with self.autocast():
                z_texture = encode(parts.vae, v, noise)
            textural = (z_texture - pattern_z).pow(2).flatten(1).sum(1)
            return textural - sign * self.rate * surrogate

        return self.pgd.minimize(x, loss, seeds)
