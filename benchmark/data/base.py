"""Datasets: an ordered list of image files, each loaded as a square CHW float tensor.

A dataset may carry one inpainting mask per image (`masks`: a folder). The mask
of `<root>/<rel>/<stem>.<ext>` is `<masks>/<rel>/<stem>.<any image extension>`
(extension case ignored), white = repaint. It must have its image's pixel size;
it is read as greyscale and gets exactly its image's crop box and resize, then is
binarised at 0.5, so it stays aligned with the image the editor sees.

A dataset may also carry per-image attributes (`attributes`: a CelebA-format
attribute file, read by benchmark.data.attributes), which GAN attribute editors
edit relative to; `attributes_of(image_id)` gives an image's row.

A dataset may carry one driving audio clip per image, or one for all (`audio`; see
benchmark.data.audio), which talking-head generators animate the portrait with;
`audio_of(image_id)` gives an image's clip.
"""

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.data.attributes import AttributeTable
from benchmark.data.audio import Audio, AudioSource
from benchmark.errors import BenchError, check, first_few
from benchmark.images import content_key, from_pil, from_uint8, read_image, to_uint8

# the crop's resize to `resolution`: Lanczos by default; `bilinear` is what torchvision's
# Resize does to a PIL image, the GAN references' loaders (StarGAN, AttGAN, Anti-Forgery)
RESAMPLING = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
              "bilinear": Image.Resampling.BILINEAR}

NEWLINE_INDENT = "\n  "
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAX_RESOLUTION = 4096


@dataclass
class Sample:
    image_id: str
    path: Path
    x: torch.Tensor  # CHW, float32 in [0, 1]
    mask: torch.Tensor | None = None  # 1HW, float32 in {0, 1}, 1 = repaint (when asked for)
    key: str | None = None  # content_key(x), when the dataset computed it


class DecodedImages:
    """Decoded, cropped, resized images and their content keys, kept per process by file
    identity (path, size, mtime and everything the crop depends on), so that the jobs 2..N of a
    sweep in one process read no file twice. Kept as 8 bits (what the float image is made
    from, so a hit is bitwise the image a fresh read gives), least recently used dropped first
    beyond `budget` bytes."""

    def __init__(self, budget: int = 1 << 30):
        self.budget, self.used = budget, 0
        self.entries: OrderedDict[tuple, tuple] = OrderedDict()

    def get(self, identity: tuple) -> tuple | None:
        entry = self.entries.get(identity)
        if entry is not None:
            self.entries.move_to_end(identity)
        return entry

    def put(self, identity: tuple, pixels: np.ndarray, mask: torch.Tensor | None, key: str,
            undersized: int | None) -> None:
        size = pixels.nbytes + (mask.numel() if mask is not None else 0)
        if size > self.budget or identity in self.entries:
            return
        mask = None if mask is None else mask.to(torch.bool)
        self.entries[identity] = (pixels, mask, key, undersized)
        self.used += size
        while self.used > self.budget:
            _, (old, old_mask, _, _) = self.entries.popitem(last=False)
            self.used -= old.nbytes + (old_mask.numel() if old_mask is not None else 0)


DECODED = DecodedImages()


def square_box(width: int, height: int, center: tuple[float, float], side: float) -> tuple:
    """The largest square of at most `side` pixels around `center` that fits in the image."""
    side = min(side, width, height)
    left = min(max(center[0] - side / 2, 0), width - side)
    top = min(max(center[1] - side / 2, 0), height - side)
    return (round(left), round(top), round(left + side), round(top + side))


class ImageDataset:
    """Base class: subclasses set `self.root` and `self.paths` and may override `crop_box`."""

    name = "images"

    def __init__(self, resolution: int = 512, limit: int | None = None,
                 masks: str | None = None, min_size: int | None = None,
                 attributes: str | None = None, audio: str | None = None,
                 interpolation: str = "lanczos"):
        check(self.name, "resolution", resolution,
              isinstance(resolution, int) and 8 <= resolution <= MAX_RESOLUTION,
              f"an integer from 8 to {MAX_RESOLUTION} (pixels of the square side; one image at "
              f"{MAX_RESOLUTION} px takes 200 MiB as float32, a batch of them more than most "
              f"GPUs hold)")
        check(self.name, "interpolation", interpolation, interpolation in RESAMPLING,
              f"one of {', '.join(RESAMPLING)} (Pillow's filters)")
        self.interpolation = interpolation
        check(self.name, "min_size", min_size,
              min_size is None or (isinstance(min_size, int) and min_size >= 1),
              "null (= resolution) or an integer >= 1 (pixels of the crop's side)")
        check(self.name, "limit", limit, limit is None or (isinstance(limit, int) and limit >= 1),
              "null or an integer >= 1")
        check(self.name, "masks", masks,
              masks is None or (isinstance(masks, str) and Path(masks).expanduser().is_dir()),
              "null or an existing folder of mask images (<masks>/<rel>/<stem>.png, "
              "white = repaint)")
        self.resolution = resolution
        self.limit = limit
        self.masks = Path(masks).expanduser() if masks is not None else None
        self.min_size = resolution if min_size is None else min_size
        # crops smaller than min_size, upscaled to the resolution: path -> crop side (a job
        # warns once about them)
        self.undersized: dict[Path, int] = {}
        self.root: Path | None = None
        self.paths: list[Path] = []
        self._mask_files: dict[Path, dict[str, list[Path]]] = {}
        check(self.name, "attributes", attributes, attributes is None or isinstance(attributes, str),
              "null or the path of a CelebA-format attribute file (list_attr_celeba.txt)")
        self.attribute_table = AttributeTable(attributes) if attributes else None
        self.audio = AudioSource(audio, f"{self.name}.audio") if audio is not None else None

    def _finish(self, paths: list[Path]) -> None:
        by_id = defaultdict(list)
        for p in paths:
            by_id[self.image_id(p)].append(p)
        clashes = [ps for ps in by_id.values() if len(ps) > 1]
        if clashes:  # their rows would be averaged together in per-image tables
            shown = first_few((" and ".join(map(str, ps)) for ps in clashes), sep="; ")
            raise BenchError(f"{self.name}: {len(clashes)} image id(s) name several files (an id "
                             f"is the path without its extension): {shown}; keep one file per "
                             f"name or move one into another folder")
        self.paths = paths[: self.limit] if self.limit else paths

    def file_stats(self, audio: bool = False) -> list[list]:
        """Path, size and mtime of every file the dataset reads (images, their masks, the
        attribute file, the audio clips when asked): a job's identity changes with them."""
        files = []
        for p in self.paths:
            try:
                st = p.stat()
                files.append([str(p), st.st_size, st.st_mtime_ns])
            except OSError:  # a dangling link: unreadable, counted by the job
                files.append([str(p), None, None])
                continue
            for m in self.mask_files(p) if self.masks is not None else []:
                mst = m.stat()
                files[-1] += [str(m), mst.st_size, mst.st_mtime_ns]
        for a in sorted(set(self.audio_files())) if audio else []:
            ast = a.stat()
            files.append([str(a), ast.st_size, ast.st_mtime_ns])
        if self.attribute_table is not None:
            ast = self.attribute_table.path.stat()
            files.append([str(self.attribute_table.path), ast.st_size, ast.st_mtime_ns])
        return files

    def __len__(self) -> int:
        return len(self.paths)

    def attributes_of(self, image_id: str) -> dict[str, int]:
        """The attribute row of one image of this dataset (dataset.attributes must be set)."""
        if self.attribute_table is None:
            raise BenchError("dataset.attributes is not set")
        path = next(p for p in self.paths if self.image_id(p) == image_id)
        return self.attribute_table.lookup(path)

    def audio_of(self, image_id: str) -> Audio:
        """The driving audio clip of one image of this dataset (dataset.audio must be set)."""
        if self.audio is None:
            raise BenchError("dataset.audio is not set")
        path = next(p for p in self.paths if self.image_id(p) == image_id)
        return self.audio.load(self._relative(path))

    def audio_files(self) -> list[Path]:
        """The clip file of each image (one path repeated when one clip serves all)."""
        return [] if self.audio is None else [self.audio.file_of(self._relative(p))
                                              for p in self.paths]

    def check_audio(self) -> None:
        """Every image has its clip (file listings only: a job calls it before any model)."""
        if self.audio is None:
            raise BenchError("dataset.audio is not set")
        self.audio.check([self._relative(p) for p in self.paths])

    def image_id(self, path: Path) -> str:
        return path.stem

    def crop_box(self, path: Path, img: Image.Image) -> tuple:
        return square_box(img.width, img.height, (img.width / 2, img.height / 2), min(img.size))

    def crop_identity(self, path: Path) -> tuple | None:
        """What `crop_box` depends on besides the image (a subclass with its own crop returns
        it, e.g. the face box); None: unknown, so the image is read anew each time."""
        return () if type(self).crop_box is ImageDataset.crop_box else None

    def _identity(self, path: Path, with_mask: bool) -> tuple | None:
        crop = self.crop_identity(path)
        if crop is None:
            return None
        stats = []
        for p in [path, *(self.mask_files(path) if with_mask else [])]:
            try:
                st = p.stat()
            except OSError:
                return None  # unreadable: load says so
            stats.append((str(p), st.st_size, st.st_mtime_ns))
        return (type(self).__module__, type(self).__qualname__, crop, tuple(stats),
                self.resolution, self.interpolation, self.min_size, with_mask)

    def load(self, index: int, with_mask: bool = False) -> Sample:
        """Read, crop and resize one image (and its mask); UnreadableImageError names the file.
        An image this process has read before with the same file identity comes from memory."""
        path = self.paths[index]
        identity = self._identity(path, with_mask)
        kept = DECODED.get(identity) if identity is not None else None
        if kept is not None:
            pixels, mask, key, undersized = kept
            if undersized is not None:
                self.undersized[path] = undersized
            return Sample(self.image_id(path), path, from_uint8(pixels),
                          None if mask is None else mask.float(), key)
        img = read_image(path)
        box = self.crop_box(path, img)
        undersized = box[2] - box[0] if box[2] - box[0] < self.min_size else None
        if undersized is not None:
            self.undersized[path] = undersized
        mask = self._load_mask(path, img.size, box) if with_mask else None
        x = from_pil(self._fit(img.crop(box)))
        sample = Sample(self.image_id(path), path, x, mask, content_key(x))
        if identity is not None:
            DECODED.put(identity, to_uint8(x), mask, sample.key, undersized)
        return sample

    def _fit(self, img: Image.Image) -> Image.Image:
        if img.size != (self.resolution, self.resolution):
            img = img.resize((self.resolution, self.resolution), RESAMPLING[self.interpolation])
        return img

    # -- masks ----------------------------------------------------------------------------------

    def _relative(self, path: Path) -> Path:
        return path.relative_to(self.root) if self.root is not None else Path(path.name)

    def mask_pattern(self, path: Path) -> str:
        """Where the mask of an image is looked for, as one brace pattern (for messages)."""
        rel = self._relative(path)
        exts = ",".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        return f"{self.masks / rel.parent / rel.stem}.{{{exts}}}"

    def mask_files(self, path: Path) -> list[Path]:
        """The existing mask files of one image (normally one; several is an error)."""
        if self.masks is None:
            return []
        rel = self._relative(path)
        folder = self.masks / rel.parent
        if folder not in self._mask_files:  # one listing per folder, not one per image
            by_stem = defaultdict(list)
            if folder.is_dir():
                for p in sorted(folder.iterdir()):
                    if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                        by_stem[p.stem].append(p)
            self._mask_files[folder] = by_stem
        return self._mask_files[folder].get(rel.stem, [])

    def mask_path(self, path: Path) -> Path:
        found = self.mask_files(path)
        if len(found) != 1:
            raise BenchError(f"dataset.masks: {self._mask_problem(path, found)}")
        return found[0]

    def _mask_problem(self, path: Path, found: list[Path]) -> str:
        if found:
            return f"several masks for image {path}: {', '.join(map(str, found))}; keep one"
        return (f"no mask for image {path} (tried {self.mask_pattern(path)}, "
                "extension case ignored)")

    def check_masks(self) -> None:
        """Every image has exactly one mask; else a BenchError naming the images and paths tried.

        Cheap (directory listings only): a job calls it before any model runs.
        """
        if self.masks is None:
            raise BenchError("dataset.masks is not set")
        problems = [self._mask_problem(p, found) for p in self.paths
                    if len(found := self.mask_files(p)) != 1]
        if problems:
            raise BenchError(
                f"dataset.masks={str(self.masks)!r}: {len(problems)} of {len(self.paths)} "
                f"image(s) lack exactly one mask (the mask of <root>/<rel>/<stem>.<ext> is "
                f"<masks>/<rel>/<stem>.<image extension>, white = repaint):\n  "
                f"{first_few(problems, sep=NEWLINE_INDENT)}")

    def _load_mask(self, path: Path, size: tuple[int, int], box: tuple) -> torch.Tensor:
        """The image's mask with the image's own crop box and resize, binarised at 0.5."""
        mask_path = self.mask_path(path)
        grey = read_image(mask_path).convert("L")
        if grey.size != size:
            raise BenchError(f"mask {mask_path} is {grey.size[0]}x{grey.size[1]} pixels but its "
                             f"image {path} is {size[0]}x{size[1]}: a mask must match its image")
        grey = self._fit(grey.crop(box))
        values = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255)
        return (values >= 0.5).float()[None]
