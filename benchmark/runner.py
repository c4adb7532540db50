"""One job: one point of the Cartesian product dataset x defense x transform x generator.

For each batch of clean images x the runner makes the images the requested
pairs need (each stage output read from the content-addressed cache or
computed, rounded to 8 bits and stored), then scores every metric on every pair:

    x_adv = release(defense.protect(x))        x_t  = T(x_adv)      x_tx = T(x)
    g_x = G(x)   g_adv = G(x_adv)   g_t = G(x_t)   g_tx = G(x_tx)

Seeds derive from (global seed, clean image identity, stage), so T(x) and
T(x_adv) share randomness, and so do all generations of one subject.

Side inputs (dataset masks, attributes, audio): benchmark.side_inputs; videos travel as
film strips (benchmark.video); scoring: benchmark.scoring; progress: benchmark.progress.

Every key holds the component's version and code digest (benchmark.cache.component_version),
and every entry and the job's stats.json the provenance record of what made them
(benchmark.provenance): stats.json's `cached_provenance` lists the records of the cached
entries the job read that another environment made.
"""

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from benchmark import fitting, side_inputs
from benchmark.build import build, tag_group
from benchmark.cache import ArtifactCache, cache_key, component_version
from benchmark.errors import BenchError, UnreadableImageError, first_few
from benchmark.images import content_key, derive_seed, release
from benchmark.models import resolve_device
from benchmark.progress import stage_bar, working
from benchmark.provenance import environment, record, weights
from benchmark.schema import (
    PAIRS,
    RECIPES,
    STAGE_COMPONENT,
    JobResult,
    needed_images,
    variant_label,
)
from benchmark.scoring import Scores, build_metrics

log = logging.getLogger(__name__)

# the call that makes each stage's output: one verb per component kind
STAGE_CALLS = {"protect": lambda c: c.protect, "transform": lambda c: c,
               "generate": lambda c: c.edit}


def _integer(cfg: DictConfig, key: str, low: int, expected: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BenchError(f"{key}={value!r} is invalid; expected {expected}")
    return value


def job_threads(value) -> tuple[int, str]:
    """Torch's CPU threads for a job and where the number comes from: `threads`, else SLURM's
    allocation, else the CPUs this process may run on (not the node's: on a shared node more
    threads than the job's cores make torch's small operations wait on each other)."""
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BenchError(f"threads={value!r} is invalid; expected null (the job's CPUs) or "
                             f"an integer >= 1")
        return value, "threads"
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm), "SLURM_CPUS_PER_TASK"
    try:
        return len(os.sched_getaffinity(0)), "the process's CPU affinity"
    except AttributeError:  # not Linux
        return os.cpu_count() or 1, "os.cpu_count()"


@dataclass
class StageStats:
    computed: int = 0
    cached: int = 0  # includes `waited`: items another job computed while this one waited
    waited: int = 0
    seconds: float = 0.0


@dataclass
class _Batch:
    ids: list[str]
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)
    masks: torch.Tensor | None = None  # (N, 1, H, W) dataset masks, when a component uses them
    mask_keys: list[str] | None = None
    attributes: list[dict] | None = None  # each image's dataset row, when a component uses it
    audio: list | None = None  # each image's dataset audio clip, when a component uses it


class Job:
    def __init__(self, cfg: DictConfig, labels: dict[str, str] | None = None):
        self.cfg = cfg
        self.pairs = list(cfg.pairs)
        unknown = [p for p in self.pairs if p not in PAIRS]
        if unknown or not self.pairs:
            raise BenchError(f"pairs={self.pairs}: unknown or empty; choose from {list(PAIRS)}")
        twice = sorted({p for p in self.pairs if self.pairs.count(p) > 1})
        if twice:  # each sample would be counted twice: n doubled, an interval too narrow
            raise BenchError(f"pairs={self.pairs}: {', '.join(twice)} given more than once; "
                             f"name each pair once")
        self.seed = _integer(cfg, "seed", 0, "an integer >= 0 (the global seed)")
        self.batch_size = _integer(cfg, "batch_size", 1, "an integer >= 1")
        self.device = resolve_device(cfg.device)
        self.threads, source = job_threads(cfg.get("threads"))
        torch.set_num_threads(self.threads)
        log.info("threads: %d (%s)", self.threads, source)
        self.strict = bool(cfg.get("strict", False))
        self.progress = bool(cfg.get("progress", True))
        self.cache = ArtifactCache(cfg.cache_dir, lock=bool(cfg.get("cache_lock", True)))
        # Cheap components first, so that a bad value stops the job before any model loads.
        self.dataset = build(cfg.dataset, "dataset")
        self.transform = build(cfg.transform, "transform")
        if self.transform.changes_size:
            raise BenchError("transform: restore=false changes the image size, so T(x_adv) cannot "
                             "be compared with x; keep restore=true for a job's transform (use "
                             "restore=false only for steps inside transform=chain)")
        self.generator = build(cfg.generator, "generator")
        self.defense = build(cfg.defense, "defense")
        self.metrics = build_metrics(cfg, self.generator.frames)
        self.components = {"protect": self.defense, "transform": self.transform,
                           "generate": self.generator}
        self.side = side_inputs.SideInputs.check(self.dataset, self.components)
        self.configs = {stage: OmegaConf.to_container(cfg[group], resolve=True)
                        for stage, group in STAGE_COMPONENT.items()}
        self.labels = {"dataset": type(self.dataset).name, "defense": self.defense.name,
                       "transform": self.transform.name, "generator": self.generator.name,
                       **(labels or {})}
        self.cache.check()  # last: a bad component value must not leave a cache directory
        self.stats: dict[str, StageStats] = defaultdict(StageStats)
        self.unreadable: list[str] = []
        self._stage_of: dict[str, str] = {}  # cache key -> the stage directory that holds it
        self._versions: dict[int, str] = {}  # id(component) -> its component_version
        self._bars: dict[str, tqdm] = {}
        self._content_keys: dict[str, str | None] = {}  # image id -> the dataset's content_key

    def _version(self, component) -> str:
        """A component's cache version, fixed at its first use: what it holds once it has
        computed (a model loaded on first use) must not change its later keys."""
        if id(component) not in self._versions:
            self._versions[id(component)] = component_version(component)
        return self._versions[id(component)]

    def _record(self, stage: str) -> dict:
        """The provenance record of this stage's outputs (its component's weights)."""
        return record(self.device, {STAGE_COMPONENT[stage]: self.configs[stage]})

    # -- stages ---------------------------------------------------------------------------------

    def stage_keys(self, stage: str, input_keys: list[str], clean_keys: list[str],
                   batch: _Batch | None = None) -> tuple[list[str], list[int], list[list[str]]]:
        """The cache keys of a stage's outputs, their seeds and their inputs' keys; an identity
        stage makes nothing, its outputs are its inputs. `bench plan` derives keys here too."""
        component = self.components[stage]
        if component.is_identity:
            return list(input_keys), [], []
        seeds = [derive_seed(self.seed, k, stage) for k in clean_keys]
        item_inputs = side_inputs.item_inputs(component, input_keys, batch)
        version = self._version(component)
        keys = [cache_key(stage, self.configs[stage], version, ins, s)
                for ins, s in zip(item_inputs, seeds)]
        return keys, seeds, item_inputs

    def _run_stage(self, stage: str, inputs: torch.Tensor, input_keys: list[str],
                   clean_keys: list[str], batch: _Batch | None = None
                   ) -> tuple[torch.Tensor, list[str]]:
        component = self.components[stage]
        if component.is_identity:
            return inputs, input_keys
        if getattr(component, "fits_on_set", False):  # one fit per set (benchmark.fitting)
            return self._run_set_stage(stage, component, inputs, input_keys, clean_keys)
        keys, seeds, item_inputs = self.stage_keys(stage, input_keys, clean_keys, batch)
        version = self._version(component)

        def compute(indices: list[int]) -> list[torch.Tensor]:
            x = inputs[indices].to(self.device)
            miss_seeds = [seeds[i] for i in indices]
            side = side_inputs.arguments(component, batch, indices, self.device)
            began = time.perf_counter()
            with working(self._bars.get(stage), len(indices)):
                try:
                    y = STAGE_CALLS[stage](component)(x, miss_seeds, **side)
                except BenchError as e:  # a missing model: every job of this component fails
                    raise tag_group(e, STAGE_COMPONENT[stage])
            y = release(y.detach()).cpu()
            # the component's own time per image (cost figures read it even when cached later)
            per_image = (time.perf_counter() - began) / len(indices)
            self._store(stage, keys, indices, y, version, item_inputs, seeds, per_image,
                        self._record(stage))
            return list(y)

        return self._served(stage, keys, compute), keys

    def set_stage_keys(self, stage: str, component, input_keys: list[str],
                       clean_keys: list[str]) -> tuple[list[int], "fitting.SetFit", list[str]]:
        """The seeds, the set's fit (its key: the keys of the whole set) and the key of each
        slot's output, for a component that fits on the whole set (what bench plan counts)."""
        seeds = [derive_seed(self.seed, k, stage) for k in clean_keys]
        version = self._version(component)
        fit = fitting.SetFit(self.cache, component, self.configs[stage], version, input_keys,
                             fitting.set_seed(self.seed, clean_keys, stage))
        keys = [cache_key(stage, self.configs[stage], version, [fit.key, f"slot:{i}"], s)
                for i, s in enumerate(seeds)]
        return seeds, fit, keys

    def _run_set_stage(self, stage: str, component, inputs: torch.Tensor, input_keys: list[str],
                       clean_keys: list[str]) -> tuple[torch.Tensor, list[str]]:
        """A component that fits on the whole set (DreamBooth): one fit per set of inputs, cached
        by the keys of the whole set (stage `fit`), then one output per slot, cached per item."""
        seeds, fit, keys = self.set_stage_keys(stage, component, input_keys, clean_keys)
        version = self._version(component)

        def compute(indices: list[int]) -> list[torch.Tensor]:
            provenance = self._record(stage)
            with working(self._bars.get(stage), len(indices)):
                try:
                    state = fit.state(inputs, {"device": str(self.device),
                                               "provenance": provenance}, self._count)
                    began = time.perf_counter()
                    y = component.generate(state, [seeds[i] for i in indices], indices,
                                           tuple(inputs.shape[-2:]))
                except BenchError as e:
                    raise tag_group(e, STAGE_COMPONENT[stage])
            y = release(y.detach()).cpu()
            per_image = (time.perf_counter() - began) / len(indices)
            slots = [[fit.key, f"slot:{i}"] for i in range(len(keys))]
            self._store(stage, keys, indices, y, version, slots, seeds, per_image, provenance)
            return list(y)

        return self._served(stage, keys, compute), keys

    def _store(self, stage: str, keys: list[str], indices: list[int], y: torch.Tensor,
               version: str, item_inputs: list, seeds: list[int], per_image: float,
               provenance: dict) -> None:
        """Each computed output of a stage with its sidecar (what made it, in how long)."""
        for j, i in enumerate(indices):
            self.cache.save_image(stage, keys[i], y[j], {
                "config": self.configs[stage], "version": version, "inputs": item_inputs[i],
                "seed": seeds[i], "seconds": per_image, "device": str(self.device),
                "provenance": provenance})

    def _served(self, stage: str, keys: list[str], compute) -> torch.Tensor:
        """A stage's outputs for `keys`: read from the cache, the missing ones computed."""
        start = time.perf_counter()
        outputs, computed, waited = self.cache.load_or_compute(
            stage, keys, lambda k: self.cache.load_image(stage, k), compute)
        self._count(stage, len(keys), computed, waited, start)
        for k in keys:
            self._stage_of[k] = stage
        return torch.stack(outputs)

    def _count(self, stage: str, total: int, computed: int, waited: int, start: float) -> None:
        stats = self.stats[stage]
        stats.computed += computed
        stats.cached += total - computed
        stats.waited += waited
        stats.seconds += time.perf_counter() - start

    def _keep_clean(self, ids: list[str], x: torch.Tensor, keys: list[str]) -> None:
        """Store the clean images too, so that figures can show them next to their edits."""
        for image_id, xi, k in zip(ids, x, keys):
            self._stage_of[k] = "clean"
            if not self.cache.has("clean", k, self.cache.IMAGE):
                self.cache.save_image("clean", k, xi, {"image_id": image_id,
                                                       "provenance": environment(self.device)})

    # -- the job --------------------------------------------------------------------------------

    @property
    def _one_set(self) -> bool:
        """The whole dataset is one batch: the generator fits on the set (one identity)."""
        return bool(getattr(self.generator, "fits_on_set", False))

    def _batches(self):
        """(image ids, clean images, their dataset masks or None, their files) per batch."""
        ids, xs, masks, paths = [], [], [], []
        for index in range(len(self.dataset)):
            try:
                sample = (self.dataset.load(index, with_mask=True) if self.side.masks
                          else self.dataset.load(index))
            except UnreadableImageError as e:
                if self.strict:
                    raise
                log.warning("skipping %s (strict=false)", e)
                self.unreadable.append(e.path)
                continue
            ids.append(sample.image_id)
            xs.append(sample.x)
            masks.append(sample.mask)
            self._content_keys[sample.image_id] = sample.key
            paths.append(str(sample.path))
            if len(ids) == self.batch_size and not self._one_set:
                yield ids, torch.stack(xs), torch.stack(masks) if self.side.masks else None, paths
                ids, xs, masks, paths = [], [], [], []
        if ids:
            yield ids, torch.stack(xs), torch.stack(masks) if self.side.masks else None, paths

    def batch(self, ids: list[str], x: torch.Tensor, masks: torch.Tensor | None) -> _Batch:
        """One batch's clean images with their keys and side inputs (what later keys chain on)."""
        keys = [self._content_keys.get(i) or content_key(xi) for i, xi in zip(ids, x)]
        batch = _Batch(ids, {"x": x}, {"x": keys}, masks,
                       None if masks is None else [content_key(m) for m in masks])
        if self.side.attributes:
            batch.attributes = [self.dataset.attributes_of(i) for i in ids]
        if self.side.audio:
            batch.audio = [self.dataset.audio_of(i) for i in ids]
        return batch

    def versions(self) -> dict[str, str]:
        """The cache version of each component and metric (code digests included)."""
        versions = {stage: self._version(c) for stage, c in self.components.items()}
        versions.update({f"metric.{n}": self._version(m) for n, m in self.metrics.items()})
        return versions

    def job_key(self) -> str:
        """Identity of the whole job: configs, versions and the dataset files' stat."""
        cfg = OmegaConf.to_container(self.cfg, resolve=True)
        semantic = {k: cfg[k] for k in ("dataset", "defense", "transform", "generator", "metric",
                                        "pairs", "seed", "strict")}
        versions = self.versions()
        files = self.dataset.file_stats(audio=self.side.audio)
        return cache_key("job", semantic, json.dumps(versions, sort_keys=True),
                         [json.dumps(files), json.dumps(self.labels, sort_keys=True)], self.seed)

    def run(self) -> JobResult:
        """Serve a finished identical job from the cache, else compute it and record it."""
        start = time.perf_counter()
        key = self.job_key()
        record = self.cache.load_json("job", key)
        if record is not None:
            stats = {**record["stats"], "stages": {"job": asdict(StageStats(cached=1))},
                     "seconds": time.perf_counter() - start, "threads": self.threads,
                     "device": str(self.device), "original_run": record["stats"]}
            return JobResult(record["rows"], stats, self.labels, record.get("images", []))
        # images are stored in the background while the next batch computes; leaving the block
        # waits until they are on disk (their locks released), before the job's record
        with self.cache.write_behind():
            result = self._compute()
        stages = result.stats["stages"]
        stages["job"] = asdict(StageStats(computed=1, seconds=result.stats["seconds"]))
        self.cache.save_json("job", key, {"rows": result.rows, "stats": result.stats,
                                          "images": result.images},
                             {"config": OmegaConf.to_container(self.cfg, resolve=True),
                              "provenance": result.stats["provenance"]})
        return result

    def _variants(self) -> list[tuple[str, object, dict]]:
        """(generator label, generator, its config) per edit the job makes: one, or one per
        target of a generator that edits several (StarGAN with target=all)."""
        label = self.labels["generator"]
        variants = self.generator.variants()
        if not variants:
            return [(label, self.generator, self.configs["generate"])]
        return [(variant_label(label, suffix), generator, {**self.configs["generate"], **change})
                for suffix, generator, change in variants]

    def _compute(self) -> JobResult:
        start = time.perf_counter()
        scores = Scores(self.metrics, self.pairs, self.cache, self.device, self._count)
        needed = needed_images(scores.scored)
        shared_images = [n for n in needed if RECIPES[n][0] != "generate"]
        edits = [n for n in needed if RECIPES[n][0] == "generate"]
        variants = self._variants()
        original = (self.components["generate"], self.configs["generate"])
        per_stage = defaultdict(int)
        for name in needed:
            per_stage[RECIPES[name][0]] += len(variants) if name in edits else 1
        n_images = len(self.dataset)
        for stage, count in per_stage.items():
            if not self.components[stage].is_identity:
                self._bars[stage] = stage_bar(stage, count * n_images, self.progress)

        image_ids: list[str] = []
        images: list[dict] = []
        for ids, x, masks, paths in self._batches():
            batch = self.batch(ids, x, masks)
            self._keep_clean(ids, x, batch.keys["x"])
            image_ids += ids
            self._make(shared_images, batch)
            for label, generator, config in variants:
                self.components["generate"], self.configs["generate"] = generator, config
                self._make(edits, batch)
                for name in ["x", *needed] if label == variants[0][0] else edits:
                    images += [{"image_id": i, "image": name, "stage": self._stage_of[k],
                                "key": k, "path": path, "generator": label}
                               for i, k, path in zip(ids, batch.keys[name], paths)]
                scores.update(label, batch.images, batch.keys)
        for bar in self._bars.values():
            bar.close()
        small = self.dataset.undersized
        if small:
            log.warning("%d image(s) have a crop smaller than dataset.min_size=%d px and were "
                        "upscaled to %d px: %s", len(small), self.dataset.min_size,
                        self.dataset.resolution,
                        first_few(f"{p.name} ({side} px)" for p, side in small.items()))
        if not image_ids:
            raise BenchError(f"dataset: no readable images ({len(self.unreadable)} unreadable)")
        self.components["generate"], self.configs["generate"] = original
        base = {k: self.labels[k] for k in ("dataset", "defense", "transform")}
        rows = [row for label, _, _ in variants
                for row in scores.rows(label, base, image_ids, self.seed)]
        stats = {
            "stages": {stage: asdict(s) for stage, s in self.stats.items()},
            "images": len(image_ids),
            "unreadable": self.unreadable,
            "seconds": time.perf_counter() - start,
            "device": str(self.device),
            "threads": self.threads,
            # deviations the components run with (e.g. DF-RAP without its ComGAN)
            "notices": [c.notice for c in self.components.values() if c.notice],
            # read by `bench table` for its arrows and bold cells, without importing metrics
            "directions": {n: m.higher_is_better for n, m in self.metrics.items()},
            **self._provenance(),
        }
        return JobResult(rows, stats, self.labels, images)

    def _provenance(self) -> dict:
        """This job's provenance record, and those of the cached entries it read that another
        environment made (another bench, torch, libjpeg, device, or other weights)."""
        here = environment(self.device)
        configs = {STAGE_COMPONENT[stage]: config for stage, config in self.configs.items()}
        configs["metric"] = OmegaConf.to_container(self.cfg.metric, resolve=True)
        elsewhere = [entry for entry in self.cache.served.values()
                     if self._made_elsewhere(entry, here)]
        return {"provenance": {**here, "components": self.versions(),
                               "weights": weights(configs)},
                "cached_provenance": elsewhere}

    def _made_elsewhere(self, entry: dict, here: dict) -> bool:
        made = entry["provenance"]
        stages = set(entry["entries"]) - {"clean", "job"}  # a clean image is the dataset's
        if not stages:
            return False
        if not isinstance(made, dict):
            return True
        return ({k: v for k, v in made.items() if k != "weights"} != here
                or any(made.get("weights") != self._record(stage)["weights"]
                       for stage in stages & set(self.configs)))

    def _make(self, names: list[str], batch: _Batch) -> None:
        """Run the stages that make `names` (dependencies first) for one batch."""
        for name in names:
            stage, source = RECIPES[name]
            batch.images[name], batch.keys[name] = self._run_stage(
                stage, batch.images[source], batch.keys[source], batch.keys["x"], batch)
            if stage in self._bars:
                self._bars[stage].update(len(batch.ids))
