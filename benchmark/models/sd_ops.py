"""Stable Diffusion arithmetic shared by the defenses and purifiers: seeded noise, encode /
decode, prompt embedding, noise prediction, the denoising loss, model handles.

Images are [0, 1]; Stable Diffusion's VAE reads [-1, 1] and its latents are
scaled by `vae.config.scaling_factor` (0.18215 for SD 1.x) before the UNet sees
them. Every random draw of an attack (latent samples, timesteps, diffusion
noise) comes from a per-image generator seeded from the image's seed, so the
protection of an image does not depend on its batch mates and is reproducible.

The models come from `benchmark.models.diffusion` (`load_vae`, `load_unet`, ...),
which loads each part once per process and shares it with the generators; a
defense loads only the parts it uses (FaceLock: the VAE alone). The defenses' base class
on top of these is `benchmark.defenses.latent_diffusion.DiffusionDefense`.
"""

from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from benchmark.errors import check
from benchmark.images import derive_seed, generator_for
from benchmark.models import DTYPES, resolve_device


class NoiseStreams:
    """One CPU generator per image; draws are stacked into a batch on `device`.

    A defense calls `begin()` at the start of every loss evaluation. With
    `frozen` set (tests only), `begin()` rewinds the streams, so every evaluation
    replays the same draws and the attack's objective becomes a deterministic
    function whose improvement a test can measure exactly.
    """

    frozen = False

    def __init__(self, seeds: Sequence[int], device: torch.device, stage: str = "noise"):
        self.seeds = [derive_seed(s, "", stage) for s in seeds]
        self.device = device
        self.rewind()

    def rewind(self) -> None:
        self.generators = [generator_for(s) for s in self.seeds]

    def begin(self) -> None:
        if self.frozen:
            self.rewind()

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
        """(N, *shape) standard normal."""
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in self.generators]
                           ).to(self.device, dtype)

    def randn_like(self, z: torch.Tensor) -> torch.Tensor:
        return self.randn(z.shape[1:], z.dtype)

    def randint(self, high: int) -> torch.Tensor:
        """(N,) integers in [0, high)."""
        return torch.stack([torch.randint(high, (), generator=g) for g in self.generators]
                           ).to(self.device)

    def numpy_seeds(self) -> list[int]:
        """(N,) seeds for numpy / OpenCV randomness, drawn from the same streams."""
        return [int(torch.randint(2**31 - 1, (), generator=g)) for g in self.generators]


# -- Stable Diffusion arithmetic -------------------------------------------------------------------


def latent_moments(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of q(z | x) for images in [0, 1], unscaled, in float32."""
    param = next(vae.parameters())
    dist = vae.encode((x * 2 - 1).to(param.device, param.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()


def encode(vae, x: torch.Tensor, noise: NoiseStreams | None = None,
           scaled: bool = True) -> torch.Tensor:
    """The latent the UNet sees: a sample of q(z | x) (its mean when `noise` is None)."""
    mean, std = latent_moments(vae, x)
    z = mean if noise is None else mean + std * noise.randn_like(mean)
    return z * vae.config.scaling_factor if scaled else z


def decode(vae, z: torch.Tensor) -> torch.Tensor:
    """Image in [0, 1] (not clamped, so gradients survive) from a scaled latent."""
    param = next(vae.parameters())
    y = vae.decode((z / vae.config.scaling_factor).to(param.device, param.dtype)).sample
    return (y.float() + 1) / 2


def embed_prompts(parts, prompts: Sequence[str]) -> torch.Tensor:
    """CLIP text encoder hidden states (N, 77, D) of the prompts, without gradients."""
    tok = parts.tokenizer
    ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    param = next(parts.text_encoder.parameters())
    with torch.no_grad():
        return parts.text_encoder(ids.to(param.device))[0]


def add_noise(alphas_cumprod: torch.Tensor, z: torch.Tensor, noise: torch.Tensor,
              t: torch.Tensor) -> torch.Tensor:
    """q(z_t | z_0) = sqrt(a_t) z_0 + sqrt(1 - a_t) noise (DDPM's forward process)."""
    a = alphas_cumprod.to(z.device)[t].float().view(-1, 1, 1, 1)
    return a.sqrt() * z + (1 - a).sqrt() * noise


def alphas_cumprod(parts) -> torch.Tensor:
    return parts.make_scheduler("ddpm").alphas_cumprod.float()


def predict_noise(unet, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                  use_checkpoint: bool = False) -> torch.Tensor:
    """The UNet's noise prediction, in float32; `use_checkpoint` trades compute for memory."""
    param = next(unet.parameters())

    def run(z, c):
        return unet(z.to(param.dtype), t.to(param.device), encoder_hidden_states=c.to(param.dtype)
                    ).sample.float()

    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(run, z_t, cond, use_reentrant=False)
    return run(z_t, cond)


def denoising_loss(parts, z: torch.Tensor, cond: torch.Tensor, noise: NoiseStreams,
                   acp: torch.Tensor) -> torch.Tensor:
    """Latent diffusion's training loss per image: ||eps_theta(z_t, t, c) - eps||^2, t ~ U."""
    t = noise.randint(len(acp))
    eps = noise.randn_like(z)
    eps_pred = predict_noise(parts.unet, add_noise(acp, z, eps, t), t, cond)
    return (eps_pred - eps).pow(2).flatten(1).mean(1)


# -- the model handle ------------------------------------------------------------------------------


class ModelParts:
    """The parts of one Stable Diffusion model a defense needs, each shared within the process
    (with the generators too); parts it does not need are never loaded."""

    def __init__(self, model: str, dtype: str, device: torch.device, parts: tuple[str, ...]):
        from benchmark.models import diffusion as sd

        self.model, self.dtype, self.device = model, dtype, device
        self.vae = sd.load_vae(model, dtype, device) if "vae" in parts else None
        self.unet = sd.load_unet(model, dtype, device) if "unet" in parts else None
        self.text_encoder = (sd.load_text_encoder(model, dtype, device)
                             if "text_encoder" in parts else None)
        self.tokenizer = sd.load_tokenizer(model) if "tokenizer" in parts else None
        self.scheduler_config = sd.load_scheduler_config(model) if "scheduler" in parts else None

    def make_scheduler(self, name: str = "default"):
        from benchmark.models.diffusion import make_scheduler

        return make_scheduler(self.scheduler_config, name)

    @property
    def scheduler(self):
        """A new instance of the model's own scheduler (schedulers keep per-run state)."""
        return self.make_scheduler("default")


class DiffusionModel:
    """A Stable Diffusion model named by id / path / `tiny/...`, loaded on first use."""

    def __init__(self, component: str, model: str, dtype: str = "fp32", device: str = "auto",
                 parts: tuple[str, ...] = ("vae", "unet", "text_encoder", "tokenizer",
                                           "scheduler")):
        check(component, "model", model, isinstance(model, str) and model,
              "a Hugging Face id, a local diffusers folder or a tiny/... model")
        check(component, "dtype", dtype, dtype in DTYPES, f"one of {sorted(DTYPES)}")
        from benchmark.models.hub import require_parts

        require_parts(model, parts)  # a missing model stops the job before any compute
        self.model, self.dtype, self.device = model, dtype, resolve_device(device)
        self.parts = parts

    def load(self) -> ModelParts:
        return ModelParts(self.model, self.dtype, self.device, self.parts)
