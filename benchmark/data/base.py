"""Datasets: an ordered list of image files, each loaded as a square CHW float tensor."""

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from benchmark.errors import check
from benchmark.images import from_pil, read_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Sample:
    image_id: str
    path: Path
    x: torch.Tensor  # CHW, float32 in [0, 1]


def square_box(width: int, height: int, center: tuple[float, float], side: float) -> tuple:
    """The largest square of at most `side` pixels around `center` that fits in the image."""
    side = min(side, width, height)
    left = min(max(center[0] - side / 2, 0), width - side)
    top = min(max(center[1] - side / 2, 0), height - side)
    return (round(left), round(top), round(left + side), round(top + side))


class ImageDataset:
    """Base class: subclasses set `self.paths` and may override `crop_box`."""

    name = "images"

    def __init__(self, resolution: int = 512, limit: int | None = None):
        check(self.name, "resolution", resolution, isinstance(resolution, int) and resolution >= 8,
              "an integer >= 8 (pixels of the square side)")
        check(self.name, "limit", limit, limit is None or (isinstance(limit, int) and limit >= 1),
              "null or an integer >= 1")
        self.resolution = resolution
        self.limit = limit
        self.paths: list[Path] = []

    def _finish(self, paths: list[Path]) -> None:
        self.paths = paths[: self.limit] if self.limit else paths

    def __len__(self) -> int:
        return len(self.paths)

    def image_id(self, path: Path) -> str:
        return path.stem

    def crop_box(self, path: Path, img: Image.Image) -> tuple:
        return square_box(img.width, img.height, (img.width / 2, img.height / 2), min(img.size))

    def load(self, index: int) -> Sample:
        """Read, crop and resize one image; raises UnreadableImageError naming the file."""
        path = self.paths[index]
        img = read_image(path)
        img = img.crop(self.crop_box(path, img))
        if img.size != (self.resolution, self.resolution):
            img = img.resize((self.resolution, self.resolution), Image.Resampling.LANCZOS)
        return Sample(self.image_id(path), path, from_pil(img))
