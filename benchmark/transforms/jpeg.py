"""JPEG compression through Pillow's libjpeg (what most photo software and platforms run)."""

import io

from PIL import Image

from benchmark.errors import check
from benchmark.transforms.base import PillowTransform

SUBSAMPLING = ("4:4:4", "4:2:2", "4:2:0")


class JpegCompression(PillowTransform):
    name = "jpeg"

    def __init__(self, quality: int = 75, subsampling: str = "4:2:0", optimize: bool = False,
                 progressive: bool = False):
        check(self.name, "quality", quality, isinstance(quality, int) and 1 <= quality <= 100,
              "an integer in 1..100")
        check(self.name, "subsampling", subsampling, subsampling in SUBSAMPLING,
              f"one of {SUBSAMPLING}")
        self.quality = quality
        self.subsampling = subsampling
        self.optimize = optimize
        self.progressive = progressive

    def apply(self, img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality, subsampling=self.subsampling,
                 optimize=self.optimize, progressive=self.progressive)
        buf.seek(0)
        with Image.open(buf) as decoded:
            return decoded.convert("RGB")
