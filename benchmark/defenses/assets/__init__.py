"""Target patterns for texture-targeted defenses (Mist, SDST, PhotoGuard's image target).

`mist_pattern.png` is made by `make_pattern()` below: a procedural texture of
concentric rings on a 64 px grid crossed with diagonal stripes, three colour
channels out of phase, high contrast at every scale a VAE latent sees. It is
the project's own work (no third-party pixels), released with the package under
its licence. Mist's own MIST.png is GPL-3.0 and is therefore not shipped.
Regenerate with `python -m benchmark.defenses.assets`. The defenses load it through
`benchmark.defenses.texture_target.load_pattern`.
"""

from pathlib import Path

import numpy as np

PATTERN_DIR = Path(__file__).resolve().parent
MIST_PATTERN = "mist_pattern.png"


def default_pattern() -> Path:
    return PATTERN_DIR / MIST_PATTERN


def make_pattern(size: int = 512, cell: int = 64) -> np.ndarray:
    """(size, size, 3) uint8: rings around each cell centre x diagonal stripes, per channel."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = (y % cell) - cell / 2, (x % cell) - cell / 2
    radius = np.hypot(cx, cy)
    rings = np.sin(2 * np.pi * radius / (cell / 4))
    phases = (0.0, 2 * np.pi / 3, 4 * np.pi / 3)
    channels = []
    for k, phase in enumerate(phases):
        stripes = np.sin(2 * np.pi * (x + (k + 1) * y) / (cell / 2) + phase)
        checker = np.where(((x // cell) + (y // cell) + k) % 2 == 0, 1.0, -1.0)
        value = 0.5 + 0.5 * np.tanh(2.5 * (rings * stripes + 0.35 * checker))
        channels.append(value)
    return np.round(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def write_pattern(path: Path | None = None) -> Path:
    from PIL import Image

    path = path or default_pattern()
    Image.fromarray(make_pattern(), mode="RGB").save(path, optimize=False)
    return path

