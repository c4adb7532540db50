"""The edit-disruption metrics the GAN-defense papers report: L2 error and success rate.

Ruiz et al. 2020 (natanielruiz/disrupting-deepfakes, stargan/solver.py `test_attack`),
Anti-Forgery (AbstractTeen/AntiForgery, main.py) and CMUA-Watermark (evaluate.py) score
an edit of the protected image against the edit of the clean one with

- `l2_error`: `F.mse_loss(gen, gen_noattack)` on [-1, 1] images, i.e. the mean squared
  difference over pixels and channels, 4 x the same on [0, 1] images (`EditL2`);
- `n_dist / n_samples`: the share of edits with that MSE above 0.05 (`DisruptionRate`,
  1 or 0 per image; its mean over images is the papers' success rate).

On the `protection` pair they are the papers' numbers; on `edit`, the same after a
transformation. Higher = more disrupted (the protection works).
"""

import torch

from benchmark.errors import check
from benchmark.metrics.base import Metric


def mse_pm1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image MSE of [0, 1] images in the references' [-1, 1] units, float64."""
    return ((a.double() - b.double()) * 2).pow(2).flatten(1).mean(dim=1)


class EditL2(Metric):
    name = "edit_l2"
    higher_is_better = None  # higher = more disrupted; a distance, not a quality

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mse_pm1(a, b).cpu()


class DisruptionRate(Metric):
    name = "n_dist"
    higher_is_better = None

    def __init__(self, threshold: float = 0.05):
        check(self.name, "threshold", threshold,
              isinstance(threshold, (int, float)) and threshold >= 0,
              "an MSE on [-1, 1] images >= 0 (0.05 in the references)")
        self.threshold = float(threshold)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (mse_pm1(a, b) > self.threshold).double().cpu()
