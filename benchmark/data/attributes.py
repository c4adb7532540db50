"""Per-image binary attributes from a CelebA-format attribute file (`dataset.attributes`).

The format of CelebA's `list_attr_celeba.txt` (Liu et al., ICCV 2015), which
CelebAMask-HQ's `CelebAMask-HQ-attribute-anno.txt` shares: an optional first
line with the number of images, a line of attribute names, then one line per
image: its file name and one value per attribute (1 = present, -1 or 0 = absent).

GAN attribute editors (StarGAN, AttGAN) edit relative to the source image's
attributes (flip "Male", set one hair colour), so an image's row is side
information of the edit and of the defenses that attack it. An image is found
by its file name, else by its name without extension (CelebA-HQ's `0.jpg`
converted to `0.png` still matches).
"""

from pathlib import Path

from benchmark.errors import BenchError, first_few


class AttributeTable:
    """The rows of one attribute file: `lookup(path) -> {attribute name: 0 or 1}`."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise BenchError(f"dataset.attributes={str(path)!r}: no such file (a CelebA-format "
                             f"attribute file such as list_attr_celeba.txt)")
        lines = [line.split() for line in self.path.read_text().splitlines() if line.strip()]
        if lines and len(lines[0]) == 1 and lines[0][0].isdigit():
            lines = lines[1:]  # the image count
        if len(lines) < 2:
            raise BenchError(f"{self.path}: expected a line of attribute names and one line "
                             f"per image (CelebA's list_attr_celeba.txt format)")
        self.names = lines[0]
        self.rows: dict[str, dict[str, int]] = {}
        for number, fields in enumerate(lines[1:], start=3):
            values = fields[1:]
            if len(values) != len(self.names) or any(v not in ("1", "-1", "0") for v in values):
                raise BenchError(f"{self.path}, line {number}: expected a file name and "
                                 f"{len(self.names)} values in {{1, -1, 0}}, got {fields[:4]}...")
            row = {n: int(v == "1") for n, v in zip(self.names, values)}
            self.rows[fields[0]] = row
            self.rows.setdefault(Path(fields[0]).stem, row)

    def find(self, path: Path) -> dict[str, int] | None:
        return self.rows.get(path.name, self.rows.get(path.stem))

    def lookup(self, path: Path) -> dict[str, int]:
        row = self.find(path)
        if row is None:
            raise BenchError(f"dataset.attributes: image {path} has no row in {self.path} "
                             f"(looked for {path.name!r} and {path.stem!r})")
        return row

    def check(self, paths: list[Path]) -> None:
        """Every image has a row; else one error naming the first few that lack one."""
        missing = [str(p) for p in paths if self.find(p) is None]
        if missing:
            raise BenchError(f"dataset.attributes={str(self.path)!r}: {len(missing)} of "
                             f"{len(paths)} image(s) have no row (matched by file name, then by "
                             f"name without extension): {first_few(missing)}")
