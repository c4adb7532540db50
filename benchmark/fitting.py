"""Fit on a set: components that learn from a whole set of images before they make anything.

A DreamBooth generator fine-tunes a model on the photos of one identity and then generates
from it; CMUA's universal watermark is trained on a set of clean images and then added to each.
Such a component is fitted once per *set*, and its fitted state is one cache entry (stage
`fit`), keyed by the cache keys of every image of the set in order, the part of its config
that changes the fit, its version and the set's seed:

    fit key = cache_key("fit", fit_config, version, [key_1, ..., key_n], set_seed)

So ten transforms of one protected set are ten sets and train ten models, re-running trains
none (the outputs, and the state, come from the cache), and one changed image changes the
set's key: one refit. The outputs made from a fitted state are cached per item as every stage
output is, keyed by the fit key, the item's slot in the set and its own seed; a change of
config that only changes what is made from the state (DreamBooth's evaluation prompts, sampling
steps) keeps the fit key, so the model is not retrained.

The set's seed derives from the *clean* images' keys (`set_seed`), so the model fitted on the
protected set and the one fitted on the clean set draw the same training noise (paired, as
the generators' per-image noise is).

A set-fitted component says `fits_on_set = True` and has

    fit_config(config) -> dict                 the config keys that change the fit
    fit(x, seed) -> np.ndarray                 the fitted state of the set x (N, C, H, W)
    generate(state, seeds, slots) -> y         the outputs of those slots from the state

and the runner gives it the whole dataset (one identity) as one batch (benchmark.runner:
`_run_set_stage`). Its `edit(x, seeds)` fits on x and generates, uncached, for callers
without a cache (the conformance suite).

CMUA could use the same: `fit(x, seed)` trains the watermark on the training set (today its
`_train`, cached by itself in stage `universal` under a key of its training images' files),
`generate(state, seeds, slots)` would be replaced by `protect` adding the state to each image,
and `fit_config` is its config without the keys its cache already drops. The defense stage
would then call `SetFit` as the generator stage does, and CMUA's own cache would go. Not
migrated here.
"""

import time
from collections.abc import Callable

import numpy as np
import torch

from benchmark.cache import ArtifactCache, cache_key
from benchmark.images import derive_seed

STAGE = "fit"


def set_seed(global_seed: int, clean_keys: list[str], stage: str) -> int:
    """The seed of a set: from the global seed and the keys of the set's clean images."""
    return derive_seed(global_seed, ",".join(clean_keys), f"{stage}-set")


def fit_config(component, config: dict) -> dict:
    """The part of a component's config that changes its fit (all of it unless it says)."""
    own = getattr(component, "fit_config", None)
    return dict(config) if own is None else own(config)


class SetFit:
    """The fitted state of one set: read from the cache, or fitted once and stored."""

    def __init__(self, cache: ArtifactCache, component, config: dict, version: str,
                 input_keys: list[str], seed: int):
        self.cache, self.component = cache, component
        self.config = fit_config(component, config)
        self.version, self.inputs, self.seed = version, list(input_keys), seed
        self.key = cache_key(STAGE, self.config, version, self.inputs, seed)
        self._state: np.ndarray | None = None

    def state(self, x: torch.Tensor, meta: dict,
              count: Callable[[str, int, int, int, float], None] | None = None) -> np.ndarray:
        """The set's state; fits on `x` (the whole set, in the order of its keys) when no job
        has. `count(stage, total, computed, waited, start)` records it in the job's stats."""
        if self._state is not None:
            return self._state
        if len(x) != len(self.inputs):
            raise ValueError(f"a set of {len(self.inputs)} keys but {len(x)} images")

        def compute(indices: list[int]) -> list[np.ndarray]:
            began = time.perf_counter()
            state = np.ascontiguousarray(self.component.fit(x, self.seed), dtype=np.float32)
            self.cache.save_array(STAGE, self.key, state, {
                "config": self.config, "version": self.version, "inputs": self.inputs,
                "seed": self.seed, "seconds": time.perf_counter() - began, **meta})
            return [state]

        start = time.perf_counter()
        (state,), computed, waited = self.cache.load_or_compute(
            STAGE, [self.key], lambda k: self.cache.load_array(STAGE, k), compute)
        if count is not None:
            count(STAGE, 1, computed, waited, start)
        self._state = state
        return state
