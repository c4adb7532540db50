"""Paired noise across precisions: fp16 / bf16 editors draw the same noise as fp32 ones.

diffusers draws latent, VAE-posterior and scheduler noise with
`randn_tensor(..., dtype=<the model's dtype>)`. Whether a seeded CPU generator
gives the same numbers in float16 as in float32 depends on the torch version
(identical in torch 2.14; different in torch 2.11, where an fp16 edit of a seed
started from other noise than the fp32 edit of that seed and differed by 0.18
mean absolute on [0, 1] while each network agreed to 1e-3). Inside
`float32_noise()` every draw is made in float32 and then cast, so one seed means
one noise in every precision and torch version.
"""

import sys
from contextlib import contextmanager

import torch
from diffusers.utils import torch_utils

_DRAW = torch_utils.randn_tensor


def randn_float32(shape, generator=None, device=None, dtype=None, layout=None):
    noise = _DRAW(shape, generator=generator, device=device, dtype=torch.float32, layout=layout)
    return noise if dtype is None else noise.to(dtype)


@contextmanager
def float32_noise():
    """Route diffusers' `randn_tensor` (imported by name into each pipeline, VAE and
    scheduler module) through `randn_float32` for the duration of the block."""
    patched = [m for name, m in list(sys.modules.items())
               if name.startswith("diffusers") and getattr(m, "randn_tensor", None) is _DRAW]
    for module in patched:
        module.randn_tensor = randn_float32
    try:
        yield
    finally:
        for module in patched:
            module.randn_tensor = _DRAW
