"""The seven public-domain portraits shipped with the package (see portraits/PROVENANCE.md).

Each photo is cropped to a square around its face (boxes from dlib's CNN detector,
stored in portraits/faces.json by scripts/detect_portrait_faces.py) and resized.
"""

import json
from pathlib import Path

from PIL import Image

from benchmark.data.base import ImageDataset, square_box
from benchmark.errors import check
from benchmark.paths import portraits_dir


class PortraitsDataset(ImageDataset):
    name = "portraits"

    def __init__(self, resolution: int = 512, limit: int | None = None, face_margin: float = 2.2,
                 masks: str | None = None, min_size: int | None = None,
                 attributes: str | None = None, audio: str | None = None,
                 interpolation: str = "lanczos"):
        super().__init__(resolution, limit, masks, min_size, attributes, audio, interpolation)
        check(self.name, "face_margin", face_margin, face_margin >= 1.0,
              "a number >= 1 (square side as a multiple of the face box)")
        self.face_margin = face_margin
        faces = json.loads((portraits_dir() / "faces.json").read_text())["faces"]
        self.faces = {name: tuple(box) for name, box in faces.items()}
        self.root = portraits_dir()
        self._finish([portraits_dir() / name for name in sorted(self.faces)])

    def crop_identity(self, path: Path) -> tuple | None:
        return (self.faces.get(path.name), self.face_margin)

    def crop_box(self, path: Path, img: Image.Image) -> tuple:
        left, top, right, bottom = self.faces[path.name]
        side = self.face_margin * max(right - left, bottom - top)
        # Centre a little below the face box so that the crop keeps chin and shoulders.
        center = ((left + right) / 2, (top + bottom) / 2 + 0.1 * (bottom - top))
        return square_box(img.width, img.height, center, side)
