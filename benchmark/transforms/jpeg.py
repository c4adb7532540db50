"""JPEG compression through Pillow's libjpeg (what most photo software and platforms run).

The output is Pillow's save/load round trip, bit for bit: `quality` 1..100 picks
libjpeg's scaled standard quantisation tables, `subsampling` the chroma
resolution, `optimize` / `progressive` the entropy coding (which does not change
the decoded pixels, only the file size).

Strength: quality 90 -> 10 (WAVES's compression range).
"""

import io

from PIL import Image

from benchmark.transforms.base import PillowTransform, check_choice, check_flag, check_number, lerp

SUBSAMPLING = ("4:4:4", "4:2:2", "4:2:0")
STRENGTH_QUALITY = (90, 10)


def check_quality(component: str, quality) -> int:
    return check_number(component, "quality", quality, 1, 100, "an integer in 1..100",
                        integer=True)


def jpeg_round_trip(img: Image.Image, quality: int, subsampling: str = "4:2:0",
                    optimize: bool = False, progressive: bool = False) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=subsampling, optimize=optimize,
             progressive=progressive)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


class JpegCompression(PillowTransform):
    name = "jpeg"

    def __init__(self, quality: int = 75, subsampling: str = "4:2:0", optimize: bool = False,
                 progressive: bool = False, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            quality = round(lerp(strength, *STRENGTH_QUALITY))
        self.quality = check_quality(self.name, quality)
        self.subsampling = check_choice(self.name, "subsampling", subsampling, SUBSAMPLING)
        self.optimize = check_flag(self.name, "optimize", optimize)
        self.progressive = check_flag(self.name, "progressive", progressive)

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        return jpeg_round_trip(img, self.quality, self.subsampling, self.optimize,
                               self.progressive)
