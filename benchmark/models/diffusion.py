"""Stable Diffusion components (VAE, UNet, text encoder, tokenizer, scheduler), shared per process.

Every component is loaded once per (model, part, dtype, device) and shared: a
defense that attacks the SD 1.5 VAE and a generator that edits with SD 1.5 hold
the same module objects. The modules are frozen (eval mode, no parameter
gradients); gradients still flow to their inputs, which is what attacks need.

    parts = load_sd_components("stable-diffusion-v1-5/stable-diffusion-v1-5", "fp16", "cuda")
    parts.vae, parts.unet, parts.text_encoder, parts.tokenizer  # shared modules
    parts.scheduler                                             # a new scheduler each access
    parts.make_scheduler("ddpm")                                # or another kind, same betas

The same call serves the inpainting (`stable-diffusion-v1-5/stable-diffusion-inpainting`,
UNet with 9 input channels) and InstructPix2Pix (`timbrooks/instruct-pix2pix`, 8)
repositories, local diffusers folders, and the tiny random models (`tiny/sd`, ...).
Call `require_parts(model)` (benchmark.models.hub) when a component is built, so
that a missing model stops a job before any compute; load on first use, so that
a job served from the cache loads nothing.
"""

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.errors import BenchError, MissingModelError
from benchmark.models import DTYPES, resolve_device, shared
from benchmark.models.hub import hub_cache_dir, is_path
from benchmark.models.tiny import is_builtin

SCHEDULERS = {
    "default": None,  # the one the model ships with (PNDM for SD 1.5)
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise BenchError(f"dtype={name!r}: expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def _missing(model: str, subfolder: str | None, e: Exception) -> MissingModelError:
    where = model if is_path(model) else hub_cache_dir()
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return MissingModelError(model, where, f"{subfolder or 'model'}: {type(e).__name__}: "
                             f"{first_line[:300]}")


def load_pretrained(cls, model: str, subfolder: str | None, **kwargs):
    try:
        return cls.from_pretrained(model, subfolder=subfolder, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise _missing(model, subfolder, e) from None


def _module(part: str, model: str, subfolder: str | None, dtype: str, device) -> nn.Module:
    device = resolve_device(device)

    def load() -> nn.Module:
        from benchmark.models import tiny

        if is_builtin(model):
            tiny.check_builtin(model)
            module = {"vae": tiny.tiny_vae, "text_encoder": tiny.tiny_text_encoder,
                      "unet": tiny.tiny_unet}[part](model)
            # nn.Module.to: diffusers' own `to` warns about fp32-kept modules tiny ones lack
            return frozen(nn.Module.to(module, device=device, dtype=torch_dtype(dtype)))
        import diffusers
        import transformers

        cls = {"vae": diffusers.AutoencoderKL, "unet": diffusers.UNet2DConditionModel,
               "text_encoder": transformers.CLIPTextModel}[part]
        module = load_pretrained(cls, model, subfolder, torch_dtype=torch_dtype(dtype))
        return frozen(module.to(device))

    return shared((part, model, subfolder, dtype, str(device)), load)


def load_vae(model: str, dtype: str = "fp32", device="auto", subfolder: str | None = "vae"):
    return _module("vae", model, subfolder, dtype, device)


def load_unet(model: str, dtype: str = "fp32", device="auto", subfolder: str | None = "unet"):
    return _module("unet", model, subfolder, dtype, device)


def load_text_encoder(model: str, dtype: str = "fp32", device="auto",
                      subfolder: str | None = "text_encoder"):
    return _module("text_encoder", model, subfolder, dtype, device)


def load_tokenizer(model: str, subfolder: str | None = "tokenizer"):
    def load():
        from benchmark.models import tiny

        if is_builtin(model):
            tiny.check_builtin(model)
            return tiny.tiny_tokenizer(model)
        from transformers import CLIPTokenizer

        return load_pretrained(CLIPTokenizer, model, subfolder)

    return shared(("tokenizer", model, subfolder), load)


def load_scheduler_config(model: str, subfolder: str | None = "scheduler") -> dict:
    """The model's scheduler_config.json (its noise schedule), as a plain dict."""
    def load() -> dict:
        from benchmark.models import tiny

        if is_builtin(model):
            tiny.check_builtin(model)
            scheduler = tiny.tiny_scheduler(model)
            return {**dict(scheduler.config), "_class_name": type(scheduler).__name__}
        from diffusers import DDPMScheduler

        try:
            return dict(DDPMScheduler.load_config(model, subfolder=subfolder,
                                                  local_files_only=True))
        except (OSError, ValueError) as e:
            raise _missing(model, subfolder, e) from None

    return dict(shared(("scheduler_config", model, subfolder), load))


def make_scheduler(config: dict, name: str = "default"):
    """A new scheduler instance of kind `name` with the model's noise schedule."""
    import diffusers

    if name not in SCHEDULERS:
        raise BenchError(f"scheduler={name!r}: expected one of {sorted(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name] or config["_class_name"])
    return cls.from_config(config)


@dataclass(frozen=True)
class SDComponents:
    """The modules of one Stable Diffusion model, shared within the process."""

    model: str
    dtype: str
    device: torch.device
    vae: nn.Module
    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    scheduler_config: dict

    @property
    def scheduler(self):
        """A new instance of the model's own scheduler (schedulers keep per-run state)."""
        return make_scheduler(self.scheduler_config, "default")

    def make_scheduler(self, name: str = "default"):
        return make_scheduler(self.scheduler_config, name)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_sd_components(model: str, dtype: str = "fp32", device="auto") -> SDComponents:
    """Every part of a diffusers Stable Diffusion folder (or tiny model), each shared."""
    device = resolve_device(device)
    return SDComponents(
        model=model, dtype=dtype, device=device,
        vae=load_vae(model, dtype, device), unet=load_unet(model, dtype, device),
        text_encoder=load_text_encoder(model, dtype, device),
        tokenizer=load_tokenizer(model), scheduler_config=load_scheduler_config(model))
