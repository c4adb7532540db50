"""DiffusionGuard: disrupt the inpainting model's first denoising step, robust to mask changes.

Choi, Kim, Jeong, Shin. "DiffusionGuard: A Robust Defense Against Malicious
Diffusion-based Image Editing." ICLR 2025. arXiv:2410.05694.

    min_{||x_adv - x||_inf <= eps}  - || eps_theta([z_T, m', E(x_adv * (1 - m'))], T_1, c) ||_2 / B

where z_T ~ N(0, I) are B fresh latents per image (`noise_batch`; the norm is that of
the whole stack of B noise predictions, divided by B, as attack_diffusionguard.py's
`-(noise_pred.norm(p=2) / batch_size)`), T_1 is the first timestep of the
pipeline's schedule, c the (empty) prompt's embedding with no classifier-free
guidance, and m' the repaint mask drawn anew every iteration by shrinking the
kept (face) region's contour at random (`shrink_region`), so that the
perturbation keeps working when the editor's mask differs from the one used.
Only the kept region is perturbed.

Defaults from choi403/DiffusionGuard (config/diffusionguard.yaml; values, their [-1, 1]
units and sources: configs/defense/diffusionguard.yaml's card): sign steps at a constant
step, no random start, T_1 the first of the inference steps, mask augmentation
`contour_shrink`, SD inpainting. The face
region comes from the detector (benchmark/defenses/masks.py: the `sd_inpaint`
generator's rule). The shrink follows utils/mask_generation.py and
utils/utils.py there (benchmark/defenses/masks.py `shrink_region`): region
radius sqrt(pi * A / 2) (`get_mask_radius_list`), contour points as OpenCV's
CHAIN_APPROX_SIMPLE keeps them, offsets smoothed by scipy's Gaussian with
reflecting ends and truncated to integers. Reference model:
runwayml/stable-diffusion-inpainting (its copy stable-diffusion-v1-5/stable-diffusion-inpainting,
whose own VAE encodes the masked image). Reference precision: fp16 weights (main.py loads
the pipeline with torch_dtype=float16, variant fp16; attacks/common.py keeps the image and
its perturbation in half precision, no autocast).
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.defenses.eot import build_eot
from benchmark.defenses.latent_diffusion import DiffusionDefense
from benchmark.defenses.masks import FaceMask, masked_image, shrink_region
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.precision import ReferencePrecision
from benchmark.errors import check
from benchmark.models.sd_ops import NoiseStreams, encode, predict_noise

AUGMENTATIONS = ("contour_shrink", "fixed")


class DiffusionGuard(DiffusionDefense):
    name = "diffusionguard"
    version = "3"  # 3: noise_batch > 1 takes the norm of the stack / B, as the reference
    reference_precision = ReferencePrecision("fp16")

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
                 eps: float = 8.0, step: float = 0.5, iterations: int = 800,
                 random_start: bool = False, steps: int = 4, prompt: str = "",
                 noise_batch: int = 1, grad_samples: int = 1,
                 mask_augmentation: str = "contour_shrink", contour_strength: float = 1.1,
                 contour_smoothness: float = 0.1, contour_rounds: int = 15,
                 mask: dict | None = None, eot: list | None = None, dtype: str = "fp32",
                 precision: str = "fp32", device: str = "auto"):
        self.pgd = LinfPGD(eps, step, iterations, random_start, grad_samples=grad_samples,
                           transforms=build_eot(eot, self.name), component=self.name)
        check(self.name, "steps", steps, isinstance(steps, int) and 1 <= steps <= 1000,
              "an integer in 1..1000 (the schedule whose first timestep is attacked)")
        check(self.name, "noise_batch", noise_batch,
              isinstance(noise_batch, int) and noise_batch >= 1, "an integer >= 1")
        check(self.name, "mask_augmentation", mask_augmentation,
              mask_augmentation in AUGMENTATIONS, f"one of {AUGMENTATIONS}")
        check(self.name, "contour_strength", contour_strength,
              isinstance(contour_strength, (int, float)) and contour_strength >= 0, "a number >= 0")
        check(self.name, "contour_smoothness", contour_smoothness,
              isinstance(contour_smoothness, (int, float)) and contour_smoothness > 0,
              "a number > 0")
        check(self.name, "contour_rounds", contour_rounds,
              isinstance(contour_rounds, int) and contour_rounds >= 2, "an integer >= 2")
        check(self.name, "prompt", prompt, isinstance(prompt, str), "a string")
        self.steps, self.prompt, self.noise_batch = steps, prompt, noise_batch
        self.augmentation = mask_augmentation
        self.contour = (float(contour_strength), float(contour_smoothness), contour_rounds)
        self.mask = FaceMask(**(mask or {}), component=self.name)
        self._setup_model(model, dtype, device, precision)

    def first_timestep(self, parts) -> tuple[torch.Tensor, float]:
        scheduler = parts.scheduler
        scheduler.set_timesteps(self.steps)
        return scheduler.timesteps[0].long(), scheduler.init_noise_sigma

    def augmented_masks(self, repaint: torch.Tensor, noise: NoiseStreams) -> torch.Tensor:
        """This iteration's repaint masks: the kept region of each image shrunk at random."""
        if self.augmentation == "fixed":
            return repaint
        kept = (repaint[:, 0] < 0.5).cpu().numpy()
        out = [shrink_region(k, np.random.default_rng(s), *self.contour)
               for k, s in zip(kept, noise.numpy_seeds())]
        return 1 - torch.from_numpy(np.stack(out)).float()[:, None].to(repaint.device)

    def noise_norm(self, parts, x_adv: torch.Tensor, repaint: torch.Tensor, cond: torch.Tensor,
                   noise: NoiseStreams, t: torch.Tensor, sigma: float) -> torch.Tensor:
        """||eps_theta|| of the first step per image: the L2 norm of its stack of noise_batch
        predictions, divided by noise_batch (the reference's loss for one image)."""
        z_image = encode(parts.vae, masked_image(x_adv, repaint), noise)
        small_mask = F.interpolate(repaint, size=z_image.shape[-2:])
        predictions = []
        for _ in range(self.noise_batch):
            latents = noise.randn_like(z_image) * sigma
            eps = predict_noise(parts.unet, torch.cat([latents, small_mask, z_image], dim=1),
                                t.expand(len(x_adv)).to(self.device), cond)
            predictions.append(eps.flatten(1))
        return torch.cat(predictions, dim=1).norm(dim=1) / self.noise_batch

    def protect(self, x: torch.Tensor, seeds: Sequence[int],
                masks: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.parts
        x = x.to(self.device)
        repaint = self.mask(x, masks)
        noise = NoiseStreams(seeds, self.device, self.name)
        cond = self.prompt_condition(len(x))
        t, sigma = self.first_timestep(parts)

        def loss(v: torch.Tensor) -> torch.Tensor:
            noise.begin()
            m = self.augmented_masks(repaint, noise)
            with self.autocast():
                return -self.noise_norm(parts, v, m, cond, noise, t, sigma)

        return self.pgd.minimize(x, loss, seeds, mask=1 - repaint)
