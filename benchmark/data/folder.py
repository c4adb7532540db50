"""Any directory of images: recursive, sorted by relative path, centre-cropped to a square."""

import logging
from pathlib import Path

from benchmark.data.base import IMAGE_EXTENSIONS, ImageDataset
from benchmark.errors import BenchError, first_few

log = logging.getLogger(__name__)


class FolderDataset(ImageDataset):
    name = "folder"

    def __init__(self, root: str | None = None, resolution: int = 512, limit: int | None = None,
                 extensions: list[str] | tuple[str, ...] = IMAGE_EXTENSIONS,
                 masks: str | None = None, min_size: int | None = None,
                 attributes: str | None = None, audio: str | None = None,
                 interpolation: str = "lanczos"):
        super().__init__(resolution, limit, masks, min_size, attributes, audio, interpolation)
        if root in (None, "", "???"):
            raise BenchError("dataset=folder needs the images' folder: add dataset.root=/path/to/"
                             "images (or set BENCH_DATA, which the paper presets read)")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BenchError(f"dataset.root={root!r}: not a directory (set dataset.root=/path/to/images)")
        exts = {e.lower() for e in extensions}
        # A dangling link is kept: loading it fails and the job counts it as unreadable.
        files = [p for p in self.root.rglob("*")
                 if p.is_file() or (p.is_symlink() and not p.exists())]
        paths = sorted(p for p in files if p.suffix.lower() in exts)
        if not paths:
            raise BenchError(f"dataset.root={root!r}: no image files with extensions {sorted(exts)}")
        others = sorted(p.relative_to(self.root).as_posix() for p in files
                        if p.suffix.lower() not in exts and not p.name.startswith("."))
        if others:
            log.warning("dataset.root=%s: %d file(s) skipped, not of the accepted extensions "
                        "%s: %s", root, len(others), ", ".join(sorted(exts)), first_few(others))
        self._finish(paths)

    def image_id(self, path: Path) -> str:
        # Relative path without suffix, so that a/001.png and b/001.png stay distinct.
        return path.relative_to(self.root).with_suffix("").as_posix()
