"""Device and platform pipelines: a screenshot of a downscaled display, a social-network upload.

- `DisplayCapture`: an image shown on a screen at `scale` of its resolution (the
  viewer downscales it with `down`), captured at display resolution and saved
  (`save: png`, lossless, or `jpeg` at `quality`), then brought back to the
  image's size (`up`) to be reused. Pillow's resampling throughout.
- `PlatformUpload`: what a social network does to an upload: the longest side is
  capped at `max_side` (1080 for feed images on most platforms, 2048 for "HD"
  uploads) with Pillow's `Image.thumbnail` (bicubic, box pre-reduction), then the
  picture is re-encoded as JPEG at the platform's `quality`. Images already
  within the cap are only re-encoded. The input size is restored (Pillow bicubic)
  unless `restore: false`.

Strength: display scale 1 -> 0.25; platform JPEG quality 90 -> 10.
"""

from PIL import Image

from benchmark.transforms.base import PillowTransform, check_choice, check_flag, check_number, lerp
from benchmark.transforms.jpeg import STRENGTH_QUALITY, SUBSAMPLING, check_quality, jpeg_round_trip
from benchmark.transforms.resize import check_interpolation, resize_pil, scaled_size


class DisplayCapture(PillowTransform):
    name = "display"

    def __init__(self, scale: float = 0.5, down: str = "bilinear", up: str = "bicubic",
                 save: str = "png", quality: int = 90, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            scale = lerp(strength, 1.0, 0.25)
        self.scale = float(check_number(self.name, "scale", scale, 0, 1,
                                        "display pixels per image pixel, 0 < scale <= 1",
                                        low_open=True))
        self.down = check_interpolation(self.name, "down", down, "pillow")
        self.up = check_interpolation(self.name, "up", up, "pillow")
        self.save = check_choice(self.name, "save", save, ("png", "jpeg"))
        self.quality = check_quality(self.name, quality)

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        shown = resize_pil(img, scaled_size(img.width, img.height, self.scale), self.down)
        if self.save == "jpeg":
            shown = jpeg_round_trip(shown, self.quality)
        return resize_pil(shown, img.size, self.up)


class PlatformUpload(PillowTransform):
    name = "platform"

    def __init__(self, max_side: int = 1080, quality: int = 85, subsampling: str = "4:2:0",
                 restore: bool = True, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            quality = round(lerp(strength, *STRENGTH_QUALITY))
        self.max_side = check_number(self.name, "max_side", max_side, 1, 65500,
                                     "an integer number of pixels in 1..65500", integer=True)
        self.quality = check_quality(self.name, quality)
        self.subsampling = check_choice(self.name, "subsampling", subsampling, SUBSAMPLING)
        self.restore = check_flag(self.name, "restore", restore)
        self.changes_size = not restore

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        uploaded = img.copy()
        uploaded.thumbnail((self.max_side, self.max_side), Image.Resampling.BICUBIC)
        served = jpeg_round_trip(uploaded, self.quality, self.subsampling)
        if self.restore and served.size != img.size:
            served = served.resize(img.size, Image.Resampling.BICUBIC)
        return served
