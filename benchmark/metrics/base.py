"""Metric contract: `update(a, b)` per batch of a pair, `compute()` for set-level values.

`update` returns one value per image (or None for set-level metrics, which
accumulate and return their value from `compute`). A metric with an `embedder`
receives embeddings instead of images; the runner caches those per image, so a
sweep embeds each image once. `relative_to` names a pair whose per-image value
divides this metric's value (e.g. latent shift relative to the attack's own shift).

A metric that cannot run here (its weights are not in the local cache) sets
`available = False` and `unavailable_reason` (what is missing and where to put
it) when it is built: the runner then warns once and writes no rows for it,
never a made-up number. Per image, a NaN value means "no value for this image"
(e.g. no face found) and gives no row either.
"""

import torch
from torch import nn


class Metric:
    name = "metric"
    version = "1"
    higher_is_better: bool | None = None
    set_level = False
    relative_to: str | None = None
    embedder: nn.Module | None = None
    embedder_config: dict | None = None  # identity of the embedder in cache keys
    available = True
    unavailable_reason = ""

    def unavailable(self, reason: str) -> None:
        """Mark the metric as impossible to compute here, saying why and how to fix it."""
        self.available = False
        self.unavailable_reason = reason

    def reset(self) -> None:
        pass

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def compute(self) -> float | None:
        return None
