"""WebP compression through Pillow's libwebp (what browsers and many platforms serve).

The output is Pillow's save/load round trip: `quality` 0..100 (Pillow's default
80), `method` 0..6 the encoder's effort (Pillow's default 4), `lossless` true
keeps every RGB pixel.

Strength: quality 90 -> 10 (the range WAVES uses for JPEG).
"""

import io

from PIL import Image, features

from benchmark.errors import BenchError
from benchmark.transforms.base import PillowTransform, check_flag, check_number, lerp

STRENGTH_QUALITY = (90, 10)


class WebpCompression(PillowTransform):
    name = "webp"

    def __init__(self, quality: int = 80, lossless: bool = False, method: int = 4,
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            quality = round(lerp(strength, *STRENGTH_QUALITY))
        self.quality = check_number(self.name, "quality", quality, 0, 100,
                                    "an integer in 0..100", integer=True)
        self.lossless = check_flag(self.name, "lossless", lossless)
        self.method = check_number(self.name, "method", method, 0, 6, "an integer in 0..6",
                                   integer=True)
        if not features.check("webp"):
            raise BenchError("webp: this Pillow was built without libwebp")

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=self.quality, lossless=self.lossless,
                 method=self.method)
        buf.seek(0)
        with Image.open(buf) as decoded:
            return decoded.convert("RGB")
