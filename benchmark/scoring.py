"""A job's metrics: built and checked once, then every metric on every pair, per image or set.

`Scores.update` takes one batch's images (per generator label: a job that edits with
several targets scores each edit on its own) and keeps per-image values, or the inputs
of set-level metrics (FID, KID); `Scores.rows` turns them into result rows. A metric
with an `embedder` reads each image's features from the content-addressed cache, so a
sweep embeds each image once. A per-image NaN means no value (e.g. no face found): no
row, one warning; a metric `relative_to` a pair is divided by that pair's value.
"""

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from omegaconf import DictConfig

from benchmark.build import build
from benchmark.cache import ArtifactCache, cache_key, component_version
from benchmark.errors import BenchError
from benchmark.metrics.base import Metric
from benchmark.provenance import record
from benchmark.schema import PAIRS
from benchmark.video import per_frame

log = logging.getLogger(__name__)


def build_metrics(cfg: DictConfig, frames: int) -> dict[str, Metric]:
    """The job's metrics; one that cannot be computed here stops the job with its set-up hint,
    unless skip_unavailable_metrics=true (then a warning and no rows)."""
    metrics = {name: build(mcfg, f"metric.{name}") for name, mcfg in cfg.metric.items()}
    skip_unavailable = bool(cfg.get("skip_unavailable_metrics", False))
    for name, metric in list(metrics.items()):
        if not metric.available:
            if not skip_unavailable:
                raise BenchError(
                    f"metric.{name} is unavailable: {metric.unavailable_reason}\n(provide "
                    f"what it needs, drop it from metric=[...], or run with "
                    f"skip_unavailable_metrics=true to go on without its rows)")
            log.warning("metric %s is unavailable, it writes no rows "
                        "(skip_unavailable_metrics=true): %s", name, metric.unavailable_reason)
            del metrics[name]
            continue
        metric.name = name
        if metric.relative_to and metric.relative_to not in PAIRS:
            raise BenchError(f"metric.{name}: relative_to={metric.relative_to!r} is not a pair")
    return per_frame(metrics, frames)


class Scores:
    def __init__(self, metrics: dict[str, Metric], pairs: list[str], cache: ArtifactCache,
                 device: torch.device, count: Callable[[str, int, int, int, float], None]):
        self.metrics, self.pairs, self.cache, self.device, self.count = (
            metrics, pairs, cache, device, count)
        # fixed before any embedding: a model an embedder loads on first use changes no key
        self.versions = {id(m.embedder): component_version(m.embedder)
                         for m in metrics.values() if m.embedder is not None}
        # the pairs to score: the chosen ones and those a relative metric divides by
        self.scored = list(pairs) + sorted({m.relative_to for m in metrics.values()
                                            if m.relative_to and m.relative_to not in pairs})
        self.per_sample: dict[tuple, list[torch.Tensor]] = defaultdict(list)
        self.set_inputs: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))

    def update(self, label: str, images: dict[str, torch.Tensor],
               keys: dict[str, list[str]]) -> None:
        for name, metric in self.metrics.items():
            for pair in self.scored:
                a_name, b_name = PAIRS[pair]
                a, b = images[a_name], images[b_name]
                if metric.embedder is not None:
                    a = self._embed(metric, a, keys[a_name])
                    b = self._embed(metric, b, keys[b_name])
                if metric.set_level:
                    self.set_inputs[(label, name, pair)][0].append(a)
                    self.set_inputs[(label, name, pair)][1].append(b)
                else:
                    self.per_sample[(label, name, pair)].append(metric.update(a, b).double().cpu())

    def embed_keys(self, metric: Metric, keys: list[str]) -> list[str]:
        """The cache keys of the embeddings of the images with these keys (`bench plan` too)."""
        version = self.versions[id(metric.embedder)]
        return [cache_key("embed", metric.embedder_config, version, [k], None) for k in keys]

    def _embed(self, metric: Metric, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        version = self.versions[id(metric.embedder)]
        ekeys = self.embed_keys(metric, keys)

        def compute(indices: list[int]) -> list[np.ndarray]:
            with torch.no_grad():
                feats = metric.embedder(images[indices].to(self.device)).float().cpu().numpy()
            provenance = record(self.device, {"embedder": metric.embedder_config})
            for j, i in enumerate(indices):
                self.cache.save_array("embed", ekeys[i], feats[j], {
                    "config": metric.embedder_config, "version": version, "inputs": [keys[i]],
                    "provenance": provenance})
            return list(feats)

        start = time.perf_counter()
        arrays, computed, waited = self.cache.load_or_compute(
            "embed", ekeys, lambda k: self.cache.load_array("embed", k), compute)
        self.count("embed", len(ekeys), computed, waited, start)
        return torch.from_numpy(np.stack(arrays))

    def rows(self, label: str, base: dict, image_ids: list[str], seed: int) -> list[dict]:
        """The result rows of one generator label: per image, or one set-level row."""
        rows = []
        base = {**base, "generator": label}
        for name, metric in self.metrics.items():
            for pair in self.pairs:
                if metric.relative_to == pair:
                    continue  # identically 1
                if metric.set_level:
                    a, b = self.set_inputs[(label, name, pair)]
                    metric.reset()
                    metric.update(torch.cat(a), torch.cat(b))
                    value = metric.compute()
                    if value is not None:
                        rows.append({**base, "image_id": "*", "seed": seed, "pair": pair,
                                     "metric": name, "value": value, "n": len(image_ids)})
                    continue
                values = torch.cat(self.per_sample[(label, name, pair)])
                if metric.relative_to:
                    denominator = torch.cat(self.per_sample[(label, name, metric.relative_to)])
                    values = torch.where(denominator > 0, values / denominator, math.nan)
                dropped = 0
                for image_id, value in zip(image_ids, values.tolist()):
                    if math.isnan(value):
                        dropped += 1
                        continue
                    rows.append({**base, "image_id": image_id, "seed": seed, "pair": pair,
                                 "metric": name, "value": value, "n": 1})
                if dropped and metric.relative_to:
                    log.warning("%s on pair %s: unavailable for %d image(s) (its reference "
                                "pair %s is zero: the defense does not move the encoder)",
                                name, pair, dropped, metric.relative_to)
                elif dropped:
                    log.warning("%s on pair %s: no value for %d image(s)", name, pair, dropped)
        return rows
