"""PhotoGuard: the encoder attack and the diffusion attack.

Salman, Khaddaj, Leclerc, Ilyas, Madry. "Raising the Cost of Malicious AI-Powered
Image Editing." ICML 2023. arXiv:2302.06588. Code: MadryLab/photoguard's notebooks. The
defaults, their [-1, 1] values and sources are the cards of configs/defense/photoguard_*.yaml.

Encoder attack (`PhotoGuardEncoder`): minimise ||E(x_adv) - z_target|| by L-inf
PGD against an image encoder E (the latent mean of the SD VAE for real runs).
- img2img demo (default): the step decays linearly, uniform random start, z_target = 0.
- inpainting demo (`variant: inpaint`, configs/defense/photoguard_encoder_inpaint.yaml):
  the encoder sees the masked image the inpainting pipeline encodes (the region
  to repaint set to 0 in [-1, 1]); only the kept region is perturbed; a smaller step;
  z_target = E(target image) (`target: image`; the demo's target is a
  web photo, here the shipped pattern unless `target_image` names a file).
- Random start (`clip_start: false`, both demos' `pgd`): the first gradient is taken at
  x + delta_0 before any clipping to the image range (the first step's projection clips);
  in the inpainting demo delta_0 also covers the region to repaint, which the demo's
  `X_adv.data *= mask` zeroes only after the first step, so the first gradient sees the
  masked image plus the noise everywhere. `clip_start: true` clips the start and keeps
  the repainted region clean from the start.
- Reference model: runwayml/stable-diffusion-v1-5's VAE (img2img demo) and
  runwayml/stable-diffusion-inpainting's (inpainting demo); their copies on the hub are
  stable-diffusion-v1-5/stable-diffusion-v1-5 and stable-diffusion-v1-5/stable-diffusion-inpainting.
  The encoder is the job's `encoder` (configs/encoder/sd_vae.yaml: SD 1.5's VAE);
  `encoder.model=stable-diffusion-v1-5/stable-diffusion-inpainting` encodes with the
  inpainting checkpoint's own VAE, as the inpainting demo does.
- Reference precision: fp16 weights, fp16 autocast (the demos load the pipelines with
  torch_dtype=float16 and attack inside torch.autocast('cuda')); `precision: reference`
  loads an encoder that has a `dtype` in fp16 and runs it under fp16 autocast.

Diffusion attack (`PhotoGuardDiffusion`): backpropagate through the inpainting
pipeline, ||pipe(x_adv) - target||_2 minimised, the demo's complex attack
(notebooks/demo_complex_attack_inpainting.ipynb, `attack_forward`, `super_l2`,
`super_linf`): empty prompt, a few denoising steps of DDIM from fresh latents,
target 0 in [-1, 1] (grey), no random start, constant step. The demo passes eta=1 to the pipeline's own scheduler,
and runwayml/stable-diffusion-inpainting ships DDIMScheduler (its
model_index.json and scheduler/scheduler_config.json, diffusers 0.6.0:
scaled-linear betas 0.00085..0.012, steps_offset 1, set_alpha_to_one false), so
`scheduler: ddim` is the default and runs whatever the checkpoint ships;
`scheduler: default` takes the checkpoint's own (eta is passed whenever that
scheduler's step takes one). L2 (the demo's run: per-image L2 norms in pixel
units out of 255, the gradient averaged over repeats) or L-inf (its commented
alternative, configs/defense/photoguard_diffusion_linf.yaml). Gradient checkpointing of
every UNet call and of the decoder keeps the activations of one call at a time,
so the attack fits a 80 GB GPU at 512 px. Reference model:
runwayml/stable-diffusion-inpainting (its copy stable-diffusion-v1-5/stable-diffusion-inpainting,
whose own VAE encodes the masked image). Reference precision: fp16 weights (the demo
loads the pipeline with torch_dtype=float16, revision fp16, and attacks without autocast).
"""

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from benchmark.build import build
from benchmark.defenses.assets import default_pattern
from benchmark.defenses.base import Defense
from benchmark.defenses.eot import build_eot
from benchmark.defenses.latent_diffusion import DiffusionDefense
from benchmark.defenses.masks import FaceMask, masked_image
from benchmark.defenses.pgd import PGD, LinfPGD
from benchmark.defenses.precision import ReferencePrecision, autocast_at, resolve_precision
from benchmark.errors import check
from benchmark.images import from_pil, read_image
from benchmark.models import resolve_device
from benchmark.models.sd_ops import NoiseStreams, decode, embed_prompts, encode, predict_noise

TARGETS = ("zero", "image")
VARIANTS = ("img2img", "inpaint")


def resized(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) image resized to the size of `like` (bicubic, antialiased), in [0, 1]."""
    return F.interpolate(image[None], size=like.shape[-2:], mode="bicubic",
                         antialias=True).clamp(0, 1).to(like.device)


def load_target(target_image: str | None) -> torch.Tensor:
    return from_pil(read_image(target_image or default_pattern()))


class PhotoGuardEncoder(Defense):
    name = "photoguard_encoder"
    version = "2"  # 2: the demos' unclipped random start (clip_start), inpaint start noise
    reference_precision = ReferencePrecision("fp16", "fp16")

    def __init__(self, encoder: dict, eps: float = 7.65, step: float = 2.55,
                 iterations: int = 1000, random_start: bool = True, schedule: str = "linear",
                 final_step_fraction: float = 0.01, target: str = "zero",
                 target_image: str | None = None, variant: str = "img2img",
                 mask: dict | None = None, eot: list | None = None, clip_start: bool = False,
                 precision: str = "fp32"):
        self.pgd = LinfPGD(eps, step, iterations, random_start, schedule, final_step_fraction,
                           component=self.name, transforms=build_eot(eot, self.name),
                           clip_start=clip_start)
        check(self.name, "target", target, target in TARGETS, f"one of {TARGETS}")
        check(self.name, "variant", variant, variant in VARIANTS, f"one of {VARIANTS}")
        self.target, self.variant = target, variant
        self.target_image = load_target(target_image) if target == "image" else None
        self.mask = FaceMask(**(mask or {}), component=self.name) if variant == "inpaint" else None
        encoder = dict(encoder)
        self.encoder_device = resolve_device(encoder.get("device", "auto"))
        resolved = resolve_precision(self.name, precision, encoder.get("dtype", "fp32"),
                                     self.reference_precision, self.encoder_device)
        if "dtype" in encoder:
            encoder["dtype"] = resolved.weights
        resolved.adopt(self)
        self.encoder = build(encoder, where=f"{self.name}.encoder")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_at(self.encoder_device, self.precision):
            return self.encoder(x).float()

    def target_latent(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.target == "zero":
                return torch.zeros_like(self.encode(x[:1]))
            return self.encode(resized(self.target_image, x))

    def protect(self, x: torch.Tensor, seeds: Sequence[int],
                masks: torch.Tensor | None = None) -> torch.Tensor:
        z_target = self.target_latent(x)
        if self.mask is None:
            def distance(x_adv: torch.Tensor) -> torch.Tensor:
                return (self.encode(x_adv) - z_target).flatten(1).norm(dim=1)

            return self.pgd.minimize(x, distance, seeds)

        repaint = self.mask(x, masks)
        # The demo's start noise over the region to repaint, seen by the first gradient only
        # (its mask zeroes that region after the first step); the engine draws the same start.
        first = {"noise": None}
        start_noise = None
        if self.pgd.random_start and self.pgd.eps and not self.pgd.clip_start:
            start_noise = (self.pgd.start(x, seeds) - x) * repaint

        def on_step(i: int) -> None:
            first["noise"] = start_noise if i == 0 else None

        def masked_distance(x_adv: torch.Tensor) -> torch.Tensor:
            seen = masked_image(x_adv, repaint)
            if first["noise"] is not None:
                seen = seen + first["noise"]
            return (self.encode(seen) - z_target).flatten(1).norm(dim=1)

        return self.pgd.minimize(x, masked_distance, seeds, mask=1 - repaint, on_step=on_step)


class PhotoGuardDiffusion(DiffusionDefense):
    name = "photoguard_diffusion"
    version = "2"  # 2: DDIM with eta 1 by default (was the checkpoint's scheduler without eta)
    reference_precision = ReferencePrecision("fp16")

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
                 norm: str = "l2", eps: float = 2040.0, step: float = 127.5,
                 iterations: int = 200, grad_samples: int = 10, random_start: bool = False,
                 steps: int = 4, guidance: float = 7.5, scheduler: str = "ddim",
                 eta: float = 1.0, prompt: str = "",
                 target: str = "zero", target_image: str | None = None,
                 mask: dict | None = None, checkpointing: bool = True, eot: list | None = None,
                 dtype: str = "fp32", precision: str = "fp32", device: str = "auto"):
        check(self.name, "norm", norm, norm in ("l2", "linf"), "l2 or linf")
        self.pgd = PGD(eps, step, iterations, norm, random_start, grad_samples=grad_samples,
                       transforms=build_eot(eot, self.name), component=self.name)
        check(self.name, "steps", steps, isinstance(steps, int) and 1 <= steps <= 1000,
              "an integer in 1..1000 (denoising steps backpropagated through)")
        check(self.name, "guidance", guidance, isinstance(guidance, (int, float)) and guidance >= 1,
              "a classifier-free guidance scale >= 1")
        check(self.name, "scheduler", scheduler, scheduler in ("default", "ddim"),
              "default (the model's own) or ddim")
        check(self.name, "eta", eta, isinstance(eta, (int, float)) and 0 <= eta <= 1,
              "a DDIM eta in [0, 1]")
        check(self.name, "target", target, target in TARGETS, f"one of {TARGETS}")
        check(self.name, "prompt", prompt, isinstance(prompt, str), "a string")
        check(self.name, "checkpointing", checkpointing, isinstance(checkpointing, bool),
              "true or false")
        self.steps, self.guidance, self.eta, self.prompt = steps, float(guidance), eta, prompt
        self.scheduler = scheduler
        self.target = target
        self.target_image = load_target(target_image) if target == "image" else None
        self.checkpointing = checkpointing
        self.mask = FaceMask(**(mask or {}), component=self.name)
        self._setup_model(model, dtype, device, precision)

    def edit(self, parts, x_adv: torch.Tensor, repaint: torch.Tensor, cond: torch.Tensor,
             noise: NoiseStreams) -> torch.Tensor:
        """The inpainting pipeline's output in [0, 1], differentiable in x_adv."""
        scheduler = parts.make_scheduler(self.scheduler)
        scheduler.set_timesteps(self.steps)
        stochastic = self.eta > 0 and "eta" in inspect.signature(scheduler.step).parameters
        n = len(x_adv)
        image_latent = encode(parts.vae, masked_image(x_adv, repaint), noise)
        small_mask = F.interpolate(repaint, size=image_latent.shape[-2:])
        latents = noise.randn_like(image_latent) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            z_in = torch.cat([torch.cat([latents] * 2), torch.cat([small_mask] * 2),
                              torch.cat([image_latent] * 2)], dim=1)
            t_batch = t.expand(2 * n).to(self.device)
            eps_uncond, eps_text = predict_noise(parts.unet, z_in, t_batch, cond,
                                                 self.checkpointing).chunk(2)
            eps = eps_uncond + self.guidance * (eps_text - eps_uncond)
            extra = ({"eta": self.eta, "variance_noise": noise.randn_like(latents)}
                     if stochastic else {})
            latents = scheduler.step(eps, t, latents, **extra).prev_sample
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(decode, parts.vae, latents, use_reentrant=False)
        return decode(parts.vae, latents)

    def protect(self, x: torch.Tensor, seeds: Sequence[int],
                masks: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.parts
        x = x.to(self.device)
        repaint = self.mask(x, masks)
        noise = NoiseStreams(seeds, self.device, self.name)
        n = len(x)
        cond = torch.cat([embed_prompts(parts, [""]).expand(n, -1, -1),
                          embed_prompts(parts, [self.prompt]).expand(n, -1, -1)])
        target = (resized(self.target_image, x) if self.target == "image"
                  else torch.full_like(x[:1], 0.5))

        def distance(v: torch.Tensor) -> torch.Tensor:
            noise.begin()
            with self.autocast():
                out = self.edit(parts, v, repaint, cond, noise)
            return ((out - target) * 2).flatten(1).norm(dim=1)  # in [-1, 1] units, as the demo

        return self.pgd.minimize(x, distance, seeds, mask=1 - repaint)
