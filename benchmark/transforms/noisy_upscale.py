"""Noisy upscaling: Gaussian noise, then Stable Diffusion's x4 upscaler.

Hönig, Rando, Carlini, Tramèr. "Adversarial Perturbations Cannot Reliably Protect
Artists From Generative AI." ICLR 2025. arXiv:2406.12027. The added noise drowns
the protective perturbation; the x4 upscaler (a diffusion model conditioned on
the noisy low-resolution image) regenerates clean detail. Defaults from their
code (ethz-spylab/robust-style-mimicry: noise.py, Gaussian noise of standard
deviation 0.05-0.1 with scikit-image's `random_noise`, clipped; upscale.py,
`stabilityai/stable-diffusion-x4-upscaler` through diffusers'
StableDiffusionUpscalePipeline with noise_level 320 and its default 75 steps and
guidance 9), with a caption prompt.

The upscaler's output is 4x its input. `low_res: null` feeds the image as it is
(as the authors do); `low_res: 128` first downsizes it (Pillow-like bicubic,
antialiased) so that a 512 px portrait comes back at 512 px. The result is
resized to the input size either way.

Strength: noise sigma 0 -> 0.1 (the paper's range).
"""

import torch
import torch.nn.functional as F

from benchmark.errors import check
from benchmark.images import generator_for
from benchmark.models import DTYPES, resolve_device, shared
from benchmark.models.diffusion import (
    load_scheduler_config,
    load_text_encoder,
    load_tokenizer,
    load_unet,
    load_vae,
    make_scheduler,
)
from benchmark.models.hub import require_local, require_parts
from benchmark.transforms.base import Transform, check_number, lerp
from benchmark.transforms.noise import GaussianNoise
from benchmark.transforms.resize import resize_tensor

UPSCALER = "stabilityai/stable-diffusion-x4-upscaler"


class NoisyUpscale(Transform):
    name = "noisy_upscale"
    cpu_batch = None  # batches go to the model as they are
    random = True

    def __init__(self, model: str = UPSCALER, sigma: float = 0.05, noise_level: int = 320,
                 steps: int = 75, guidance: float = 9.0,
                 prompts: list[str] = ("a photo of a person",), low_res: int | None = None,
                 max_noise_level: int = 350, dtype: str = "fp32", device: str = "auto",
                 max_batch: int = 4, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            sigma = lerp(strength, 0, 0.1)
        self.noise = GaussianNoise(sigma=sigma)
        check_number(self.name, "noise_level", noise_level, 0, max_noise_level,
                     f"an integer in 0..max_noise_level ({max_noise_level})", integer=True)
        check_number(self.name, "steps", steps, 1, 10000, "an integer >= 1", integer=True)
        check_number(self.name, "guidance", guidance, 0, 100, "a number in [0, 100]")
        check(self.name, "prompts", prompts,
              isinstance(prompts, (list, tuple)) and len(prompts) > 0
              and all(isinstance(p, str) for p in prompts), "a non-empty list of strings")
        check(self.name, "low_res", low_res,
              low_res is None or (isinstance(low_res, int) and low_res >= 8),
              "null (as given) or a side in pixels >= 8")
        check(self.name, "dtype", dtype, dtype in DTYPES, f"one of {list(DTYPES)}")
        check_number(self.name, "max_batch", max_batch, 1, 1024, "an integer >= 1", integer=True)
        self.model, self.noise_level, self.steps, self.guidance = model, noise_level, steps, guidance
        self.prompts, self.low_res, self.max_noise_level = list(prompts), low_res, max_noise_level
        self.dtype, self.device, self.max_batch = dtype, resolve_device(device), max_batch
        # A missing model stops the job before any compute.
        require_parts(model)
        require_local(model, "low_res_scheduler/scheduler_config.json")

    @property
    def pipeline(self):
        key = ("upscale-pipeline", self.model, self.dtype, str(self.device), self.max_noise_level)
        return shared(key, self._build_pipeline)

    def _build_pipeline(self):
        from diffusers import DDPMScheduler, StableDiffusionUpscalePipeline

        from benchmark.models.diffusion import load_pretrained
        from benchmark.models.tiny import is_builtin

        check(self.name, "model", self.model, not is_builtin(self.model),
              "an x4-upscaler folder or id (no built-in tiny upscaler; tests build one locally)")
        low_res = load_pretrained(DDPMScheduler, self.model, "low_res_scheduler")
        pipe = StableDiffusionUpscalePipeline(
            vae=load_vae(self.model, self.dtype, self.device),
            text_encoder=load_text_encoder(self.model, self.dtype, self.device),
            tokenizer=load_tokenizer(self.model), unet=load_unet(self.model, self.dtype, self.device),
            low_res_scheduler=low_res,
            scheduler=make_scheduler(load_scheduler_config(self.model)),
            max_noise_level=self.max_noise_level)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def prompt_for(self, seed: int) -> str:
        from benchmark.models.sd_pipeline import choose

        return choose(self.prompts, seed)

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        height, width = x.shape[-2:]
        noisy = self.noise(x, seeds).float().cpu()
        if self.low_res is not None:
            noisy = F.interpolate(noisy, size=(self.low_res, self.low_res), mode="bicubic",
                                  antialias=True, align_corners=False).clamp(0, 1)
        pipe = self.pipeline
        out = []
        for start in range(0, len(x), self.max_batch):
            chunk = slice(start, start + self.max_batch)
            chunk_seeds = seeds[chunk]
            with torch.no_grad():
                y = pipe(prompt=[self.prompt_for(s) for s in chunk_seeds], image=noisy[chunk],
                         noise_level=self.noise_level, num_inference_steps=self.steps,
                         guidance_scale=self.guidance,
                         generator=[generator_for(s) for s in chunk_seeds],
                         output_type="pt").images
            out.append(y.float().clamp(0, 1).cpu())
        y = torch.cat(out).to(x.device)
        return resize_tensor(y, (width, height), "bicubic", antialias=True)
