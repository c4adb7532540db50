"""IP-Adapter: image prompts for Stable Diffusion through decoupled cross-attention.

Ye, Zhang, Liu, Han, Yang. "IP-Adapter: Text Compatible Image Prompt Adapter for
Text-to-Image Diffusion Models." arXiv:2308.06721, 2023.

An adapter has three parts, all in the h94/IP-Adapter repository for SD 1.5:

- the CLIP image encoder, a CLIPVisionModelWithProjection (`models/image_encoder`,
  OpenCLIP ViT-H/14, 1024-d `image_embeds`), fed 224 px images normalised with
  CLIP's mean and std (the CLIPImageProcessor that diffusers' `load_ip_adapter`
  builds: shortest side to the encoder's image size, bicubic, centre crop);
- the image projection (`image_proj`: a linear map of the image embedding to 4
  tokens of the UNet's cross-attention width, then LayerNorm);
- per cross-attention layer of the UNet, a key and a value projection of those
  tokens (`ip_adapter`: `1.to_k_ip.weight`, `1.to_v_ip.weight`, `3.…`), whose
  attention output is added to the text attention's, times `scale`.

`load_ip_unet` attaches the adapter with diffusers' own loader
(`UNet2DConditionLoadersMixin._load_ip_adapter_weights`, what
`pipeline.load_ip_adapter` calls) to a COPY of the shared SD UNet: the plain UNet
stays untouched for the other editors and defenses of the process. Weights come
from a local folder or the Hugging Face cache (never downloaded here), or are the
tiny random ones of `tiny/ip-adapter` (benchmark/models/tiny.py).
"""

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.errors import BenchError, MissingModelError
from benchmark.models import DTYPES, resolve_device, shared
from benchmark.models.hub import cached_file, hub_cache_dir, is_path, load_checkpoint
from benchmark.models.tiny import is_builtin

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # transformers' OPENAI_CLIP_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # transformers' OPENAI_CLIP_STD
RESIZE_MODES = ("bicubic", "bilinear")


def _where(adapter: str) -> str:
    return str(Path(adapter).expanduser()) if is_path(adapter) else hub_cache_dir()


def adapter_file(adapter: str, filename: str) -> Path:
    """The local path of `filename` of the adapter repository or folder, or MissingModelError."""
    if is_path(adapter):
        path = Path(adapter).expanduser() / filename
        if path.is_file():
            return path
    else:
        found = cached_file(adapter, filename)
        if found:
            return Path(found)
    raise MissingModelError(adapter, _where(adapter), f"{filename} not found (`hf download "
                            f"{adapter} {filename}` fetches just that file)")


def require_adapter(adapter: str, weights: str, image_encoder: str) -> None:
    """Fail before any compute when the adapter's weights or image encoder are absent."""
    if is_builtin(adapter):
        from benchmark.models.tiny import IP_ADAPTERS

        if adapter not in IP_ADAPTERS:
            raise BenchError(f"unknown built-in IP-Adapter {adapter!r}; built in: "
                             f"{', '.join(IP_ADAPTERS)}")
        return
    adapter_file(adapter, weights)
    adapter_file(adapter, f"{image_encoder}/config.json")


def load_image_encoder(adapter: str, image_encoder: str, dtype: str = "fp32", device="auto"):
    """The adapter's CLIPVisionModelWithProjection, frozen, shared in the process."""
    device = resolve_device(device)

    def load():
        from benchmark.models.diffusion import frozen

        if is_builtin(adapter):
            from benchmark.models.tiny import tiny_image_encoder

            model = tiny_image_encoder(adapter)
        else:
            from transformers import CLIPVisionModelWithProjection

            try:
                model = CLIPVisionModelWithProjection.from_pretrained(
                    adapter, subfolder=image_encoder, local_files_only=True,
                    torch_dtype=DTYPES[dtype])
            except (OSError, ValueError) as e:
                raise MissingModelError(adapter, _where(adapter),
                                        f"{image_encoder}: {type(e).__name__}") from None
        return frozen(model.to(device, DTYPES[dtype]))

    return shared(("ip-image-encoder", adapter, image_encoder, dtype, str(device)), load)


def load_adapter_state(adapter: str, weights: str, unet=None, image_embed_dim: int = 0) -> dict:
    """{"image_proj": ..., "ip_adapter": ...} as in IP-Adapter's checkpoints (a safetensors
    file stores them flat, `image_proj.proj.weight`, and is split here)."""
    if is_builtin(adapter):
        from benchmark.models.tiny import tiny_ip_adapter_weights

        return tiny_ip_adapter_weights(unet, image_embed_dim, adapter)
    state = load_checkpoint(adapter_file(adapter, weights))
    if "image_proj" in state and "ip_adapter" in state:
        return state
    nested: dict = {"image_proj": {}, "ip_adapter": {}}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head not in nested:
            raise BenchError(f"{adapter}/{weights}: key {key!r} is neither image_proj.* nor "
                             f"ip_adapter.*; not an IP-Adapter checkpoint")
        nested[head][rest] = value
    return nested


def load_ip_unet(model: str, adapter: str, weights: str, image_encoder: str,
                 dtype: str = "fp32", device="auto"):
    """A copy of `model`'s UNet with the adapter's attention processors and image projection."""
    device = resolve_device(device)

    def load():
        from diffusers.utils import logging as diffusers_logging

        from benchmark.models.diffusion import frozen, load_unet

        unet = copy.deepcopy(load_unet(model, dtype, device))
        encoder = load_image_encoder(adapter, image_encoder, dtype, device)
        state = load_adapter_state(adapter, weights, unet, encoder.config.projection_dim)
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its `to()` warns about fp32 modules SD lacks
        try:
            unet._load_ip_adapter_weights(state, low_cpu_mem_usage=False)
        except (KeyError, RuntimeError) as e:
            raise BenchError(f"IP-Adapter {adapter}/{weights} does not fit the UNet of {model}: "
                             f"{str(e).splitlines()[0][:300]}") from None
        finally:
            diffusers_logging.set_verbosity(verbosity)
        return frozen(torch.nn.Module.to(unet, device=device, dtype=DTYPES[dtype]))

    return shared(("ip-unet", model, adapter, weights, image_encoder, dtype, str(device)), load)


def set_scale(unet, scale: float) -> None:
    """The weight of the image tokens' attention in every adapter layer (IP-Adapter's `scale`)."""
    for processor in unet.attn_processors.values():
        if hasattr(processor, "to_k_ip"):
            processor.scale = [scale] * len(processor.scale)


def clip_pixels(x: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Images in [0, 1] (square) -> the CLIP image encoder's normalised input, differentiably.

    `bicubic` (antialiased) is CLIPImageProcessor's resize; `bilinear` without
    antialiasing is how FaceShield resizes inside its attack."""
    if mode not in RESIZE_MODES:
        raise BenchError(f"clip_pixels: mode={mode!r}; expected one of {RESIZE_MODES}")
    x = x.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode=mode, antialias=mode == "bicubic",
                          align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def image_embeds(encoder, x: torch.Tensor, mode: str = "bicubic") -> torch.Tensor:
    """(N, D) CLIP image embeddings (the projection head's output) of images in [0, 1]."""
    param = next(encoder.parameters())
    pixels = clip_pixels(x.to(param.device), encoder.config.image_size, mode)
    return encoder(pixels.to(param.dtype)).image_embeds.float()
