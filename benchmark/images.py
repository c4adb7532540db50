"""Image tensors, 8-bit release, PNG I/O and per-image seeds.

Images travel as float32 RGB tensors, NCHW (CHW for one image), values in [0, 1].
"""

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from benchmark.errors import UnreadableImageError


def release(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit values a published file holds (still float in [0, 1])."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """CHW float -> HWC uint8."""
    return torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def from_uint8(a: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW float."""
    return torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1).float() / 255


def to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(x), mode="RGB")


def from_pil(img: Image.Image) -> torch.Tensor:
    return from_uint8(np.asarray(img.convert("RGB")))


# Modes whose samples are wider than 8 bits: Pillow's convert("RGB") clips them at 255
# instead of scaling, which would turn a 16-bit greyscale photo almost white.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: wide integers scaled, transparency composited on white.

    16-bit greyscale (mode I;16, or I as some decoders give it) is scaled by 255/65535
    with rounding; 16-bit colour PNGs arrive from Pillow already reduced to 8-bit RGB(A).
    Transparent pixels show the white background they would show on a web page.
    """
    if img.mode in WIDE_MODES:
        wide = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.round(wide / 257), 0, 255).astype(np.uint8), mode="L")
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Read a file as an 8-bit RGB Pillow image with its EXIF orientation applied.

    Greyscale, palette, CMYK, 16-bit and transparent images are converted (see _to_rgb);
    any width and height are kept (datasets crop and resize afterwards).
    """
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImageError(path, str(e)) from e


def content_key(x: torch.Tensor) -> str:
    """SHA-256 of an image's 8-bit pixels and shape: the identity of a clean image."""
    a = to_uint8(x)
    h = hashlib.sha256(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def derive_seed(seed: int, image_key: str, stage: str) -> int:
    """A 63-bit seed from (global seed, image identity, stage)."""
    digest = hashlib.sha256(f"{seed}/{image_key}/{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator_for(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
