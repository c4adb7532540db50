"""One job: one point of the Cartesian product dataset x defense x transform x generator.

For each batch of clean images x the runner makes the images the requested
pairs need (each stage output read from the content-addressed cache or
computed, rounded to 8 bits and stored), then scores every metric on every pair:

    x_adv = release(defense.protect(x))        x_t  = T(x_adv)      x_tx = T(x)
    g_x = G(x)   g_adv = G(x_adv)   g_t = G(x_t)   g_tx = G(x_tx)

Seeds derive from (global seed, clean image identity, stage), so T(x) and
T(x_adv) share randomness, and so do all generations of one subject.

Per-image side information: a component whose `needs_masks` is true (sd_inpaint
with mask=dataset, the inpainting defenses with mask.region=dataset) gets the dataset's mask of each clean image as `masks=`, and
the mask's content joins that item's cache key; the job checks at its start that
every image has its mask. Likewise a component whose `needs_attributes` is true (the
GAN attribute editors and the defenses that attack them) gets each clean image's row of
`dataset.attributes` as `attributes=` (a list of {name: 0 or 1}), part of its cache key.
And a component whose `needs_audio` is true (the talking-head generator, Silencer-I) gets each
clean image's clip of `dataset.audio` as `audio=` (benchmark.data.audio), its content in the key;
a generator that makes videos returns them as film strips and the metrics score them frame by
frame (benchmark.video).
"""

import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from benchmark.build import build
from benchmark.cache import ArtifactCache, cache_key
from benchmark.defenses.pgd import iteration_progress
from benchmark.errors import BenchError, UnreadableImageError
from benchmark.images import content_key, derive_seed, release
from benchmark.models import resolve_device
from benchmark.schema import PAIRS, RECIPES, STAGE_COMPONENT, JobResult
from benchmark.video import per_frame

log = logging.getLogger(__name__)

def _integer(cfg: DictConfig, key: str, low: int, expected: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BenchError(f"{key}={value!r} is invalid; expected {expected}")
    return value


def _variant_label(label: str, setting: str) -> str:
    """`stargan(target=all)` with setting `target=[Male]` -> `stargan(target=[Male])`: the label
    the same edit gets from a sweep over that setting."""
    key = setting.split("=", 1)[0]
    base, _, params = label.partition("(")
    kept = [p for p in params.rstrip(")").split(",") if p and not p.startswith(f"{key}=")]
    return f"{base}({','.join([*kept, setting])})"


@dataclass
class StageStats:
    computed: int = 0
    cached: int = 0  # includes `waited`: items another job computed while this one waited
    waited: int = 0
    seconds: float = 0.0




def _needed_images(pairs: list[str]) -> list[str]:
    """Every image the pairs need, dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name == "x":
            return
        visit(RECIPES[name][1])
        order.append(name)

    for pair in pairs:
        for name in PAIRS[pair]:
            visit(name)
    return order


@dataclass
class _Batch:
    ids: list[str]
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)
    masks: torch.Tensor | None = None  # (N, 1, H, W) dataset masks, when a component uses them
    mask_keys: list[str] | None = None
    attributes: list[dict] | None = None  # each image's dataset attributes, when a component uses them
    audio: list | None = None  # each image's dataset audio clip, when a component uses it


class Job:
    def __init__(self, cfg: DictConfig, labels: dict[str, str] | None = None):
        self.cfg = cfg
        self.pairs = list(cfg.pairs)
        unknown = [p for p in self.pairs if p not in PAIRS]
        if unknown or not self.pairs:
            raise BenchError(f"pairs={self.pairs}: unknown or empty; choose from {list(PAIRS)}")
        self.seed = _integer(cfg, "seed", 0, "an integer >= 0 (the global seed)")
        self.batch_size = _integer(cfg, "batch_size", 1, "an integer >= 1")
        self.device = resolve_device(cfg.device)
        self.strict = bool(cfg.get("strict", False))
        self.progress = bool(cfg.get("progress", True))
        self.cache = ArtifactCache(cfg.cache_dir, lock=bool(cfg.get("cache_lock", True)))
        # Cheap components first, so that a bad value stops the job before any model loads.
        self.dataset = build(cfg.dataset, "dataset")
        self.transform = build(cfg.transform, "transform")
        if getattr(self.transform, "changes_size", False):
            raise BenchError("transform: restore=false changes the image size, so T(x_adv) cannot "
                             "be compared with x; keep restore=true for a job's transform (use "
                             "restore=false only for steps inside transform=chain)")
        self.generator = build(cfg.generator, "generator")
        self.defense = build(cfg.defense, "defense")
        self.metrics = {name: build(mcfg, f"metric.{name}") for name, mcfg in cfg.metric.items()}
        skip_unavailable = bool(cfg.get("skip_unavailable_metrics", False))
        for name, metric in list(self.metrics.items()):
            if not getattr(metric, "available", True):
                if not skip_unavailable:
                    raise BenchError(
                        f"metric.{name} is unavailable: {metric.unavailable_reason}\n(provide "
                        f"what it needs, drop it from metric=[...], or run with "
                        f"skip_unavailable_metrics=true to go on without its rows)")
                log.warning("metric %s is unavailable, it writes no rows "
                            "(skip_unavailable_metrics=true): %s", name,
                            metric.unavailable_reason)
                del self.metrics[name]
                continue
            metric.name = name
            if metric.relative_to and metric.relative_to not in PAIRS:
                raise BenchError(f"metric.{name}: relative_to={metric.relative_to!r} is not a pair")
        self.components = {"protect": self.defense, "transform": self.transform,
                           "generate": self.generator}
        self.uses_masks = self._check_masks()
        self.uses_attributes = self._check_attributes()
        self.uses_audio = self._check_audio()
        self.metrics = per_frame(self.metrics, getattr(self.generator, "frames", 1))
        self.configs = {stage: OmegaConf.to_container(cfg[group], resolve=True)
                        for stage, group in STAGE_COMPONENT.items()}
        self.labels = {"dataset": type(self.dataset).name, "defense": self.defense.name,
                       "transform": self.transform.name, "generator": self.generator.name,
                       **(labels or {})}
        self.cache.check()  # last: a bad component value must not leave a cache directory
        self.stats: dict[str, StageStats] = defaultdict(StageStats)
        self.unreadable: list[str] = []
        self._stage_of: dict[str, str] = {}  # cache key -> the stage directory that holds it
        self._bars: dict[str, tqdm] = {}

    # -- stages ---------------------------------------------------------------------------------

    def _bar(self, stage: str, total: int) -> tqdm:
        if stage not in self._bars:
            self._bars[stage] = tqdm(total=total, desc=f"{stage:<9}", unit="img", leave=True,
                                     disable=not self.progress, dynamic_ncols=True)
        return self._bars[stage]

    def _check_masks(self) -> bool:
        """Whether a component takes the dataset's masks; if so, each image must have one."""
        users = [f"{STAGE_COMPONENT[stage]}.{getattr(c, 'masks_option', 'mask=dataset')}"
                 for stage, c in self.components.items() if getattr(c, "needs_masks", False)]
        if not users:
            return False
        if getattr(self.dataset, "masks", None) is None:
            raise BenchError(f"{users[0]} needs one mask per image, but dataset.masks is not "
                             "set: add dataset.masks=/path/to/masks (the mask of "
                             "<root>/<rel>/<stem>.<ext> is <masks>/<rel>/<stem>.png or any image "
                             "extension, white = repaint)")
        self.dataset.check_masks()  # directory listings only: before any model runs
        return True

    def _check_attributes(self) -> bool:
        """Whether a component takes the dataset's attributes; if so, each image must have a row."""
        users = [STAGE_COMPONENT[stage] for stage, c in self.components.items()
                 if getattr(c, "needs_attributes", False)]
        if not users:
            return False
        table = getattr(self.dataset, "attribute_table", None)
        if table is None:
            raise BenchError(f"{users[0]} edits relative to each image's attributes, but "
                             "dataset.attributes is not set: add dataset.attributes=/path/to/"
                             "list_attr_celeba.txt (CelebA format), or give the editor fixed "
                             "source attributes (generator.source={Male: 1, Young: 1})")
        table.check(self.dataset.paths)
        return True

    def _check_audio(self) -> bool:
        """Whether a component takes the dataset's audio; if so, each image must have a clip."""
        users = [STAGE_COMPONENT[stage] for stage, c in self.components.items()
                 if getattr(c, "needs_audio", False)]
        if not users:
            return False
        if getattr(self.dataset, "audio", None) is None:
            raise BenchError(f"{users[0]} needs each image's driving audio clip, but "
                             "dataset.audio is not set: add dataset.audio=/path/to/clip.wav (one "
                             "for every image), a folder of <stem>.wav files, or 'sample' (the "
                             "synthetic clip shipped with bench)")
        self.dataset.check_audio()
        return True

    def _run_stage(self, stage: str, inputs: torch.Tensor, input_keys: list[str],
                   clean_keys: list[str], batch: _Batch | None = None
                   ) -> tuple[torch.Tensor, list[str]]:
        component = self.components[stage]
        if component.is_identity:
            return inputs, input_keys
        seeds = [derive_seed(self.seed, k, stage) for k in clean_keys]
        item_inputs = [[k] for k in input_keys]
        masked = getattr(component, "needs_masks", False)
        if masked:  # the clean image's mask is an input of the item too
            item_inputs = [[k, f"mask:{m}"] for k, m in zip(input_keys, batch.mask_keys)]
        attributed = getattr(component, "needs_attributes", False)
        if attributed:  # the clean image's attributes change the edit: part of the item
            item_inputs = [ins + ["attributes:" + json.dumps(a, sort_keys=True)]
                           for ins, a in zip(item_inputs, batch.attributes)]
        voiced = getattr(component, "needs_audio", False)
        if voiced:  # the clean image's audio clip drives the video: part of the item
            item_inputs = [ins + [f"audio:{a.key}"] for ins, a in zip(item_inputs, batch.audio)]
        keys = [cache_key(stage, self.configs[stage], component.version, ins, s)
                for ins, s in zip(item_inputs, seeds)]

        def compute(indices: list[int]) -> list[torch.Tensor]:
            x = inputs[indices].to(self.device)
            miss_seeds = [seeds[i] for i in indices]
            side = {"masks": batch.masks[indices].to(self.device)} if masked else {}
            if attributed:
                side["attributes"] = [batch.attributes[i] for i in indices]
            if voiced:
                side["audio"] = [batch.audio[i] for i in indices]
            began = time.perf_counter()
            bar = self._bars.get(stage)
            if bar is not None and bar.disable:
                bar = None
            if bar is not None and bar.n == 0:  # its rate counts from its own first work
                bar.start_t = bar._time()
            if stage == "protect":
                token = iteration_progress.set(self._iteration_reporter(bar, len(indices)))
                try:
                    y = component.protect(x, miss_seeds, **side)
                finally:
                    iteration_progress.reset(token)
                    if bar is not None:
                        bar.set_postfix_str("")
            elif stage == "transform":
                y = component(x, miss_seeds, **side)
            else:
                y = component.edit(x, miss_seeds, **side)
            y = release(y.detach()).cpu()
            # the component's own time per image (cost figures read it even when cached later)
            per_image = (time.perf_counter() - began) / len(indices)
            for j, i in enumerate(indices):
                self.cache.save_image(stage, keys[i], y[j], {
                    "config": self.configs[stage], "version": component.version,
                    "inputs": item_inputs[i], "seed": seeds[i], "seconds": per_image,
                    "device": str(self.device)})
            return list(y)

        start = time.perf_counter()
        outputs, computed, waited = self.cache.load_or_compute(
            stage, keys, lambda k: self.cache.load_image(stage, k), compute)
        self._count(stage, len(keys), computed, waited, start)
        for k in keys:
            self._stage_of[k] = stage
        return torch.stack(outputs), keys

    @staticmethod
    def _iteration_reporter(bar: tqdm | None, images: int):
        """Shows the attack's iteration on the protect bar, which moves once per batch."""
        if bar is None:
            return None

        def report(i: int, iterations: int) -> None:
            bar.set_postfix_str(f"{images} image(s) at iteration {i + 1}/{iterations}",
                                refresh=False)
            bar.refresh()

        return report

    def _count(self, stage: str, total: int, computed: int, waited: int, start: float) -> None:
        stats = self.stats[stage]
        stats.computed += computed
        stats.cached += total - computed
        stats.waited += waited
        stats.seconds += time.perf_counter() - start

    def _embed(self, metric, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        version = getattr(metric.embedder, "version", "1")
        ekeys = [cache_key("embed", metric.embedder_config, version, [k], None) for k in keys]

        def compute(indices: list[int]) -> list[np.ndarray]:
            with torch.no_grad():
                feats = metric.embedder(images[indices].to(self.device)).float().cpu().numpy()
            for j, i in enumerate(indices):
                self.cache.save_array("embed", ekeys[i], feats[j], {
                    "config": metric.embedder_config, "version": version, "inputs": [keys[i]]})
            return list(feats)

        start = time.perf_counter()
        arrays, computed, waited = self.cache.load_or_compute(
            "embed", ekeys, lambda k: self.cache.load_array("embed", k), compute)
        self._count("embed", len(ekeys), computed, waited, start)
        return torch.from_numpy(np.stack(arrays))

    def _keep_clean(self, ids: list[str], x: torch.Tensor, keys: list[str]) -> None:
        """Store the clean images too, so that figures can show them next to their edits."""
        for image_id, xi, k in zip(ids, x, keys):
            self._stage_of[k] = "clean"
            if not self.cache.has("clean", k, self.cache.IMAGE):
                self.cache.save_image("clean", k, xi, {"image_id": image_id})

    # -- the job --------------------------------------------------------------------------------

    def _batches(self):
        """(image ids, clean images, their dataset masks or None, their files) per batch."""
        ids, xs, masks, paths = [], [], [], []
        for index in range(len(self.dataset)):
            try:
                sample = (self.dataset.load(index, with_mask=True) if self.uses_masks
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
            paths.append(str(sample.path))
            if len(ids) == self.batch_size:
                yield ids, torch.stack(xs), torch.stack(masks) if self.uses_masks else None, paths
                ids, xs, masks, paths = [], [], [], []
        if ids:
            yield ids, torch.stack(xs), torch.stack(masks) if self.uses_masks else None, paths

    def job_key(self) -> str:
        """Identity of the whole job: configs, versions and the dataset files' stat."""
        cfg = OmegaConf.to_container(self.cfg, resolve=True)
        semantic = {k: cfg[k] for k in ("dataset", "defense", "transform", "generator", "metric",
                                        "pairs", "seed", "strict")}
        versions = {stage: c.version for stage, c in self.components.items()}
        versions.update({f"metric.{n}": m.version for n, m in self.metrics.items()})
        files = []
        for p in self.dataset.paths:
            try:
                st = p.stat()
                files.append([str(p), st.st_size, st.st_mtime_ns])
            except OSError:  # a dangling link: unreadable, counted by the job
                files.append([str(p), None, None])
                continue
            if getattr(self.dataset, "masks", None) is not None:  # its mask file(s) too
                for m in self.dataset.mask_files(p):
                    mst = m.stat()
                    files[-1] += [str(m), mst.st_size, mst.st_mtime_ns]
        for a in sorted(set(self.dataset.audio_files()) if self.uses_audio else []):
            ast = a.stat()
            files.append([str(a), ast.st_size, ast.st_mtime_ns])
        table = getattr(self.dataset, "attribute_table", None)
        if table is not None:
            ast = table.path.stat()
            files.append([str(table.path), ast.st_size, ast.st_mtime_ns])
        return cache_key("job", semantic, json.dumps(versions, sort_keys=True),
                         [json.dumps(files), json.dumps(self.labels, sort_keys=True)], self.seed)

    def run(self) -> JobResult:
        """Serve a finished identical job from the cache, else compute it and record it."""
        start = time.perf_counter()
        key = self.job_key()
        record = self.cache.load_json("job", key)
        if record is not None:
            stats = {**record["stats"], "stages": {"job": asdict(StageStats(cached=1))},
                     "seconds": time.perf_counter() - start, "original_run": record["stats"]}
            return JobResult(record["rows"], stats, self.labels, record.get("images", []))
        result = self._compute()
        stages = result.stats["stages"]
        stages["job"] = asdict(StageStats(computed=1, seconds=result.stats["seconds"]))
        self.cache.save_json("job", key, {"rows": result.rows, "stats": result.stats,
                                          "images": result.images},
                             {"config": OmegaConf.to_container(self.cfg, resolve=True)})
        return result

    def _variants(self) -> list[tuple[str, object, dict]]:
        """(generator label, generator, its config) per edit the job makes: one, or one per
        target of a generator that edits several (StarGAN with target=all)."""
        label = self.labels["generator"]
        variants = self.generator.variants() if hasattr(self.generator, "variants") else None
        if not variants:
            return [(label, self.generator, self.configs["generate"])]
        return [(_variant_label(label, suffix), generator, {**self.configs["generate"], **change})
                for suffix, generator, change in variants]

    def _compute(self) -> JobResult:
        start = time.perf_counter()
        metric_pairs = list(self.pairs)
        for metric in self.metrics.values():
            if metric.relative_to and metric.relative_to not in metric_pairs:
                metric_pairs.append(metric.relative_to)
        needed = _needed_images(metric_pairs)
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
                self._bar(stage, count * n_images)

        # per (generator label, metric, pair): per-image values, or set-level inputs
        per_sample: dict[tuple, list[torch.Tensor]] = defaultdict(list)
        set_inputs: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
        image_ids: list[str] = []
        images: list[dict] = []
        for ids, x, masks, paths in self._batches():
            batch = _Batch(ids, {"x": x}, {"x": [content_key(xi) for xi in x]}, masks,
                           None if masks is None else [content_key(m) for m in masks])
            if self.uses_attributes:
                batch.attributes = [self.dataset.attributes_of(i) for i in ids]
            if self.uses_audio:
                batch.audio = [self.dataset.audio_of(i) for i in ids]
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
                self._score(label, metric_pairs, batch, per_sample, set_inputs)
        for bar in self._bars.values():
            bar.close()
        small = getattr(self.dataset, "undersized", {})
        if small:
            shown = ", ".join(f"{p.name} ({side} px)" for p, side in list(small.items())[:5])
            log.warning("%d image(s) have a crop smaller than dataset.min_size=%d px and were "
                        "upscaled to %d px: %s%s", len(small), self.dataset.min_size,
                        self.dataset.resolution, shown, ", ..." if len(small) > 5 else "")
        if not image_ids:
            raise BenchError(f"dataset: no readable images ({len(self.unreadable)} unreadable)")
        self.components["generate"], self.configs["generate"] = original
        rows = [row for label, _, _ in variants
                for row in self._rows(label, image_ids, per_sample, set_inputs)]
        stats = {
            "stages": {stage: asdict(s) for stage, s in self.stats.items()},
            "images": len(image_ids),
            "unreadable": self.unreadable,
            "seconds": time.perf_counter() - start,
            "device": str(self.device),
            # read by `bench table` for its arrows and bold cells, without importing metrics
            "directions": {n: m.higher_is_better for n, m in self.metrics.items()},
        }
        return JobResult(rows, stats, self.labels, images)

    def _make(self, names: list[str], batch: _Batch) -> None:
        """Run the stages that make `names` (dependencies first) for one batch."""
        for name in names:
            stage, source = RECIPES[name]
            batch.images[name], batch.keys[name] = self._run_stage(
                stage, batch.images[source], batch.keys[source], batch.keys["x"], batch)
            if stage in self._bars:
                self._bars[stage].update(len(batch.ids))

    def _score(self, label: str, metric_pairs: list[str], batch: _Batch, per_sample: dict,
               set_inputs: dict) -> None:
        for metric_name, metric in self.metrics.items():
            for pair in metric_pairs:
                a_name, b_name = PAIRS[pair]
                a, b = batch.images[a_name], batch.images[b_name]
                if metric.embedder is not None:
                    a = self._embed(metric, a, batch.keys[a_name])
                    b = self._embed(metric, b, batch.keys[b_name])
                if metric.set_level:
                    set_inputs[(label, metric_name, pair)][0].append(a)
                    set_inputs[(label, metric_name, pair)][1].append(b)
                else:
                    per_sample[(label, metric_name, pair)].append(
                        metric.update(a, b).double().cpu())

    def _rows(self, label: str, image_ids: list[str], per_sample: dict,
              set_inputs: dict) -> list[dict]:
        """The result rows of one generator label: per image, or one set-level row."""
        rows = []
        base = {k: self.labels[k] for k in ("dataset", "defense", "transform")}
        base["generator"] = label
        for metric_name, metric in self.metrics.items():
            for pair in self.pairs:
                if metric.relative_to == pair:
                    continue  # identically 1
                if metric.set_level:
                    a, b = set_inputs[(label, metric_name, pair)]
                    metric.reset()
                    metric.update(torch.cat(a), torch.cat(b))
                    value = metric.compute()
                    if value is not None:
                        rows.append({**base, "image_id": "*", "seed": self.seed, "pair": pair,
                                     "metric": metric_name, "value": value, "n": len(image_ids)})
                    continue
                values = torch.cat(per_sample[(label, metric_name, pair)])
                if metric.relative_to:
                    denominator = torch.cat(per_sample[(label, metric_name, metric.relative_to)])
                    values = torch.where(denominator > 0, values / denominator, math.nan)
                dropped = 0
                for image_id, value in zip(image_ids, values.tolist()):
                    if math.isnan(value):
                        dropped += 1
                        continue
                    rows.append({**base, "image_id": image_id, "seed": self.seed, "pair": pair,
                                 "metric": metric_name, "value": value, "n": 1})
                if dropped and metric.relative_to:
                    log.warning("%s on pair %s: unavailable for %d image(s) (its reference "
                                "pair %s is zero: the defense does not move the encoder)",
                                metric_name, pair, dropped, metric.relative_to)
                elif dropped:  # NaN = no value for that image (e.g. no face found)
                    log.warning("%s on pair %s: no value for %d image(s)", metric_name, pair,
                                dropped)
        return rows
