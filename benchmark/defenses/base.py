"""Defense contract: `protect(x, seeds) -> x_adv`, images NCHW float in [0, 1].

Budgets are in pixel units out of 255 (`eps: 8` is 8/255). The runner rounds
the output to 8 bits (what a published file holds) before anything else sees it.
"""

from collections.abc import Sequence

import torch

from benchmark.errors import check


class Defense:
    name = "defense"
    version = "1"  # bump when the algorithm changes: it is part of every cache key
    is_identity = False
    masks_option = "mask.region=dataset"  # how a user asks for the dataset's masks
    needs_attributes = False  # true: protect() takes attributes=, each image's dataset row
    notice: str | None = None  # a deviation this instance runs with, printed with the job's notice
    needs_audio = False  # true: protect() takes audio=, each image's dataset audio clip

    @property
    def needs_masks(self) -> bool:
        """Whether protect() takes each image's dataset mask as `masks=` (the runner reads it)."""
        return getattr(getattr(self, "mask", None), "needs_masks", False)

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def budget(self) -> tuple[str, float] | None:
        """(norm, radius in [0, 1] units) that x_adv - x stays within, norm `linf` or `l2`;
        None: no pixel budget (the class then exempts the conformance suite's `budget`
        contract, benchmark.testing, saying why)."""
        pgd = getattr(self, "pgd", None)
        if pgd is not None and getattr(pgd, "eps", None) is not None:
            return pgd.norm, pgd.eps
        eps = getattr(self, "eps", None)
        return ("linf", eps) if isinstance(eps, float) else None


class NoDefense(Defense):
    """No protection: x_adv = x. The reference row of every table."""

    name = "none"
    is_identity = True

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        return x


def check_budget(component: str, eps: float) -> float:
    check(component, "eps", eps, isinstance(eps, (int, float)) and 0 <= eps <= 255,
          "a budget in pixel units out of 255, 0 <= eps <= 255")
    return eps / 255
