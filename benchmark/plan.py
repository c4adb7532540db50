"""`bench plan OVERRIDES...` (and `bench run -m OVERRIDES... --plan`): what a sweep costs before it
runs.

The sweep is expanded as Hydra's basic sweeper expands it (the command line's comma lists and an
experiment's `hydra.sweeper.params`), each job is built as `bench run` builds it (components are
cheap to build: models load on first use, and nothing here uses one), and every cache key a job
needs is derived by the runner's own code (`Job.batch`, `Job.stage_keys`, `Scores.embed_keys`),
so the plan's counts are the run's. Items are counted once per sweep, however many jobs need
them. A job whose folder holds its finished results, or whose whole record is in the job cache,
needs nothing.

Device time per item to compute: the mean `seconds` that the cached items of the same stage and
component config recorded in their sidecars on the same kind of device; else the shipped table
`measured_seconds.csv` (seconds per image measured by scripts/bench_defenses.py and
scripts/bench_generators.py, or docs/transforms.md), scaled by the work (iterations, denoising
steps) and by the pixel count; else unknown.
"""

import csv
import json
import logging
import math
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from benchmark.errors import BenchError

log = logging.getLogger(__name__)

MEASURED = Path(__file__).with_name("measured_seconds.csv")
STAGES = ("protect", "transform", "fit", "generate", "embed")
ARRAY_STAGES = ("fit", "embed")  # stored as arrays (a fitted model's weights, embeddings)
SWEEP_FLAGS = ("-m", "--multirun", "--plan")


@dataclass(frozen=True)
class Need:
    """One cache entry a job needs, and what its cost depends on."""
    stage: str
    key: str
    component: str  # the config's name (`noise`), or the metric's for embeddings
    config: str  # the component's resolved config, canonical JSON
    resolution: int | None  # the dataset's
    batch: int


@dataclass
class Estimate:
    seconds: float | None  # per image; None: unknown
    source: str


@dataclass
class PlannedJob:
    number: int
    overrides: list[str]
    outdir: Path
    device: str  # the kind of device it will run on, for the estimates
    skipped: str = ""  # why it needs nothing
    error: str = ""  # why it would fail before any compute
    needs: list[Need] = field(default_factory=list)


@dataclass
class StagePlan:
    needed: int = 0
    cached: int = 0
    seconds: float = 0.0
    unknown: int = 0  # items to compute whose time is unknown
    sources: set[str] = field(default_factory=set)

    @property
    def to_compute(self) -> int:
        return self.needed - self.cached


@dataclass
class Plan:
    jobs: list[PlannedJob]
    stages: dict[str, StagePlan]
    job_records: StagePlan  # the job-level entries: a finished identical job is served whole
    cache_dir: str
    launcher: dict | None  # SLURM's array, when hydra/launcher=slurm

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages.values())


# -- the sweep's jobs ------------------------------------------------------------------------------

def _overrides(argv: list[str]) -> list[str]:
    """The overrides of `bench run -m ...`: the sweep flags dropped, any other option refused."""
    options = [a for a in argv if a.startswith("-") and a not in SWEEP_FLAGS]
    if options:
        raise BenchError(f"{options[0]}: not an override; bench plan takes the overrides of "
                         f"`bench run -m` (KEY=VALUE, KEY=A,B for a sweep)")
    return [a for a in argv if a not in SWEEP_FLAGS]


def _composed_jobs(overrides: list[str]) -> tuple[DictConfig, list[tuple[list[str], DictConfig]]]:
    """The sweep's root config and, per job, its overrides and full config (hydra node
    included), as Hydra's basic sweeper and launcher make them."""
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    from benchmark import safety
    from benchmark.paths import config_dir

    safety.install()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            hydra = GlobalHydra.instance().hydra
            root = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN,
                                        with_log_configuration=False)
            _require_basic(str(root.hydra.sweeper._target_))
            str(root.hydra.sweep.dir)  # resolved once: its time stamp is every job's
            params = [f"{k}={v}" for k, v in (root.hydra.sweeper.params or {}).items()]
            task = OmegaConf.to_container(root.hydra.overrides.task, resolve=False)
            parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(
                params + task)
            jobs = []
            for number, job_overrides in enumerate(BasicSweeper.split_arguments(parsed, None)[0]):
                cfg = hydra.config_loader.load_sweep_config(root, list(job_overrides))
                with open_dict(cfg):
                    cfg.hydra.job.num = number
                    cfg.hydra.job.id = f"plan_{number}"
                jobs.append((list(job_overrides), cfg))
    except HydraException as e:  # its first line names the key and value
        raise BenchError(next(line for line in [*str(e).splitlines(), repr(e)] if line.strip())
                         ) from None
    finally:
        GlobalHydra.instance().clear()
    return root, jobs


def _require_basic(target: str) -> None:
    """Only sweepers that expand as Hydra's basic one does (bench's own derives from it)."""
    import importlib

    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    module, _, name = target.rpartition(".")
    try:
        basic = issubclass(getattr(importlib.import_module(module), name), BasicSweeper)
    except (ImportError, AttributeError, TypeError, ValueError):
        basic = False
    if not basic:
        raise BenchError(f"hydra/sweeper={target}: bench plan expands the basic sweeper's "
                         f"Cartesian products only")


def _task_config(cfg: DictConfig) -> DictConfig:
    """The config a job's task function gets: without the hydra node."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    task = cfg.copy()
    with open_dict(task):
        del task["hydra"]
    return task


def _device_kind(cfg: DictConfig, launcher: dict | None) -> str:
    from benchmark.models import resolve_device

    if launcher and launcher["gpus"] and str(cfg.device) == "auto":
        return "cuda"  # planned on a login node, run on a GPU node
    return resolve_device(cfg.device).type


# -- what each job needs ---------------------------------------------------------------------------

class _CleanKeys:
    """Each dataset's batches with their keys and side inputs only (pixels dropped), read once
    per sweep: every job over the same dataset starts from the same clean images."""

    def __init__(self):
        self.seen: dict[str, list] = {}

    def batches(self, job) -> list:
        dataset = OmegaConf.to_container(job.cfg.dataset, resolve=True)
        ident = json.dumps([dataset, job.batch_size, vars(job.side)], sort_keys=True, default=str)
        if ident not in self.seen:
            kept = []
            for ids, x, masks, _ in job._batches():
                batch = job.batch(ids, x, masks)
                batch.images, batch.masks = {}, None
                kept.append(batch)
            self.seen[ident] = kept
        return [_copy(b) for b in self.seen[ident]]


def _copy(batch):
    from dataclasses import replace

    return replace(batch, images={}, keys={"x": batch.keys["x"]})


def _canonical(config) -> str:
    from benchmark.build import semantic_config

    return json.dumps(semantic_config(config), sort_keys=True, default=str)


def _walk(job, names: list[str], batch, resolution) -> Iterator[Need]:
    """The keys of `names` for one batch, chained as Job._make chains them."""
    from benchmark.schema import RECIPES, STAGE_COMPONENT, base_label

    for name in names:
        stage, source = RECIPES[name]
        fitted = getattr(job.components[stage], "fits_on_set", False)
        if fitted:  # one fit per set, then one output per slot (Job._run_set_stage)
            _, fit, keys = job.set_stage_keys(stage, job.components[stage], batch.keys[source],
                                              batch.keys["x"])
        else:
            keys = job.stage_keys(stage, batch.keys[source], batch.keys["x"], batch)[0]
        batch.keys[name] = keys
        if job.components[stage].is_identity:
            continue
        component = base_label(job.labels[STAGE_COMPONENT[stage]])
        config = job.configs[stage]
        size = min(job.batch_size, config.get("max_batch") or job.batch_size)
        if fitted:
            yield Need("fit", fit.key, component, _canonical(fit.config), resolution, len(keys))
        for key in keys:
            yield Need(stage, key, component, _canonical(config), resolution, size)


def _embeddings(scores, batch, resolution) -> Iterator[Need]:
    from benchmark.schema import PAIRS

    for name, metric in scores.metrics.items():
        if metric.embedder is None:
            continue
        config = _canonical(metric.embedder_config)
        for pair in scores.scored:
            for image in PAIRS[pair]:
                for key in scores.embed_keys(metric, batch.keys[image]):
                    yield Need("embed", key, name, config, resolution, 1)


def job_needs(job, clean: _CleanKeys) -> list[Need]:
    """Every cache entry `job` reads or makes, in the order Job._compute goes through them."""
    from benchmark.schema import RECIPES, needed_images
    from benchmark.scoring import Scores

    scores = Scores(job.metrics, job.pairs, job.cache, job.device, lambda *a: None)
    needed = needed_images(scores.scored)
    shared = [n for n in needed if RECIPES[n][0] != "generate"]
    edits = [n for n in needed if RECIPES[n][0] == "generate"]
    resolution = OmegaConf.select(job.cfg, "dataset.resolution", default=None)
    original = (job.components["generate"], job.configs["generate"])
    needs = []
    try:
        for batch in clean.batches(job):
            needs += _walk(job, shared, batch, resolution)
            for _, generator, config in job._variants():
                job.components["generate"], job.configs["generate"] = generator, config
                needs += _walk(job, edits, batch, resolution)
                needs += _embeddings(scores, batch, resolution)
    finally:
        job.components["generate"], job.configs["generate"] = original
    return needs


def _plan_job(number: int, overrides: list[str], cfg: DictConfig, launcher: dict | None,
              clean: _CleanKeys) -> PlannedJob:
    from benchmark.cache import ArtifactCache
    from benchmark.cli import job_fingerprint, job_labels, name_the_scale
    from benchmark.results.job_files import is_finished
    from benchmark.runner import Job

    outdir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    labels = job_labels(cfg.hydra)
    choice = cfg.hydra.runtime.choices.get("scale")
    task = _task_config(cfg)
    planned = PlannedJob(number, overrides, outdir, "?")
    fingerprint = job_fingerprint(task)
    try:
        planned.device = _device_kind(task, launcher)
        if fingerprint and is_finished(outdir, fingerprint):
            planned.skipped = "finished in its folder"
            return planned
        name_the_scale(task, choice)
        job = Job(task, labels)
        if job.cache.has("job", job.job_key(), ArtifactCache.RECORD):
            planned.skipped = "served whole from the job cache"
            return planned
        planned.needs = job_needs(job, clean)
    except BenchError as e:
        planned.error = str(e)
    return planned


# -- device time -----------------------------------------------------------------------------------

def _measured_rows() -> list[dict]:
    with open(MEASURED, newline="") as f:
        return list(csv.DictReader(f))


def _kind(device: str) -> str:
    """`cuda:0` -> cuda; a GPU's name (the table's) -> cuda."""
    device = str(device).split(":")[0]
    return device if device in ("cpu", "cuda", "mps") else "cuda"


def _work(key: str, config: dict) -> float | None:
    """How much of the measured work an item of this config does, in the row's unit."""
    if key == "iterations":
        return config.get("iterations")
    if key == "denoising_steps" and config.get("steps") and config.get("strength") is not None:
        return int(config["steps"] * config["strength"])
    if key == "reverse_steps" and config.get("strength") is None and config.get("t"):
        return int(config["steps"] * config["t"] / 1000)
    return None


def _size(key: str, config: dict, resolution: int | None) -> int | None:
    if key == "resolution":
        return config.get("resolution") or resolution
    return resolution


def _models(config) -> set[str]:
    """Every `model` a config names, at any depth (a defense's encoder's too)."""
    if isinstance(config, dict):
        found = {config["model"]} if isinstance(config.get("model"), str) else set()
        return found.union(*(_models(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(_models(v) for v in config))
    return set()


def _from_table(need: Need, device: str, rows: list[dict]) -> Estimate | None:
    """A measured figure for this component on this kind of device with the same model (a
    tiny random model costs nothing like the one measured) and precision."""
    config = json.loads(need.config)
    precision = str(config.get("precision", config.get("dtype", "fp32")))
    models = _models(config)
    matching = [r for r in rows if r["stage"] == need.stage and r["component"] == need.component
                and _kind(r["device"]) == device and r["precision"] == precision
                and models & set(r["models"].split())]
    if not matching:
        return None
    fitting = [r for r in matching if int(r["batch"]) <= need.batch] or matching
    row = max(fitting, key=lambda r: int(r["batch"]))
    seconds = float(row["seconds_per_image"])
    if row["work_key"]:
        work = _work(row["work_key"], config)
        if not work:
            return None
        seconds *= work / float(row["work"])
    if row["size_key"]:
        size = _size(row["size_key"], config, need.resolution)
        if not size:
            return None
        seconds *= (size / float(row["size"])) ** 2
    return Estimate(seconds, f"table of {row['measured']}, {row['device']} ({row['source']}), "
                             f"scaled by work and pixels")


def _recorded(cached: list[Need], cache, device: str) -> Estimate | None:
    """The mean seconds per image the cached items recorded on this kind of device."""
    seconds = []
    for need in cached:
        try:
            sidecar = json.loads(cache.path(need.stage, need.key, ".json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(sidecar.get("seconds"), (int, float)) and \
                _kind(sidecar.get("device", "")) == device:
            seconds.append(float(sidecar["seconds"]))
    if not seconds:
        return None
    return Estimate(sum(seconds) / len(seconds),
                    f"recorded by {len(seconds)} cached item(s) on {device}")


def _estimates(todo: dict[tuple, list[Need]], cached: dict[tuple, list[Need]], cache,
               devices: dict[str, str]) -> dict[tuple, Estimate]:
    rows = _measured_rows()
    out = {}
    for group, needs in todo.items():
        device = devices[needs[0].key]
        out[group] = (_recorded(cached.get(group, []), cache, device)
                      or _from_table(needs[0], device, rows)
                      or Estimate(None, "unknown"))
    return out


# -- the plan --------------------------------------------------------------------------------------

def _launcher(root: DictConfig) -> dict | None:
    """The SLURM array's shape and per-task resources, when the launcher is SLURM."""
    launcher = OmegaConf.to_container(root.hydra.launcher, resolve=True)
    if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return None
    gres = str((launcher.get("additional_parameters") or {}).get("gres", ""))
    return {"partition": launcher.get("partition"), "gpus": launcher.get("gpus_per_node")
            or ("gpu" in gres and gres) or 0, "cpus": launcher.get("cpus_per_task"),
            "mem_gb": launcher.get("mem_gb"), "timeout_min": launcher.get("timeout_min"),
            "parallel": launcher.get("array_parallelism"),
            "group_by": [str(k) for k in launcher.get("group_by") or []]}


def plan(overrides: list[str]) -> Plan:
    """The plan of the sweep `bench run -m OVERRIDES` would run, from the cache as it is now."""
    from benchmark.cache import ArtifactCache

    root, composed = _composed_jobs(overrides)
    launcher = _launcher(root)
    clean = _CleanKeys()
    jobs = [_plan_job(n, o, cfg, launcher, clean) for n, (o, cfg) in enumerate(composed)]
    cache_dir = str(root.cache_dir)
    cache = ArtifactCache(cache_dir)
    stages = {s: StagePlan() for s in STAGES}
    todo, cached, devices = defaultdict(list), defaultdict(list), {}
    for job in jobs:
        for need in job.needs:
            if need.key in devices:
                continue
            devices[need.key] = job.device
            stages[need.stage].needed += 1
            group = (need.stage, need.component, need.config, need.resolution, need.batch)
            ext = ArtifactCache.ARRAY if need.stage in ARRAY_STAGES else ArtifactCache.IMAGE
            if cache.has(need.stage, need.key, ext):
                stages[need.stage].cached += 1
                cached[group].append(need)
            else:
                todo[group].append(need)
    for group, estimate in _estimates(todo, cached, cache, devices).items():
        stage = stages[group[0]]
        if estimate.seconds is None:
            stage.unknown += len(todo[group])
        else:
            stage.seconds += estimate.seconds * len(todo[group])
        stage.sources.add(f"{group[1]}: {estimate.source}" + (
            f", {estimate.seconds:.3g} s/image" if estimate.seconds is not None else ""))
    records = StagePlan(needed=sum(not j.error for j in jobs))
    records.cached = sum(bool(j.skipped) for j in jobs)
    return Plan(jobs, stages, records, cache_dir, launcher)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 36 else f"{seconds:.3g} s"


def format_plan(p: Plan) -> str:
    failing = [j for j in p.jobs if j.error]
    devices = sorted({j.device for j in p.jobs if j.device != "?"})
    header = (f"plan: {len(p.jobs)} job(s); cache {p.cache_dir}; device time on "
              f"{', '.join(devices) or 'no device'}")
    lines = [header, f"  {'stage':<10}{'needed':>8}{'cached':>8}{'compute':>9}  device time"]
    for name, s in p.stages.items():
        time = _hours(s.seconds) if s.to_compute and not s.unknown else (
            "unknown" if s.unknown and not s.seconds else
            f"{_hours(s.seconds)} + unknown for {s.unknown}" if s.unknown else "0")
        lines.append(f"  {name:<10}{s.needed:>8}{s.cached:>8}{s.to_compute:>9}  {time}")
    r = p.job_records
    lines.append(f"  {'job':<10}{r.needed:>8}{r.cached:>8}{r.to_compute:>9}  "
                 f"(finished or cached jobs are served whole)")
    for name, s in p.stages.items():
        for source in sorted(s.sources):
            lines.append(f"  {name}: {source}")
    unknown = [n for n, s in p.stages.items() if s.unknown]
    total = f"total: {p.seconds / 3600:.3g} device-hours"
    if unknown:
        total += f" (+ unknown for {', '.join(unknown)}: no record, no measured figure)"
    lines.append(total)
    for job in p.jobs:
        if job.skipped:
            lines.append(f"  job {job.number} ({' '.join(job.overrides)}): {job.skipped}")
    errors = defaultdict(list)
    for job in failing:  # the first line: the whole message is bench run's
        errors[job.error.splitlines()[0]].append(str(job.number))
    for error, numbers in errors.items():
        lines.append(f"  {len(numbers)} job(s) would fail before any compute (job "
                     f"{', '.join(numbers)}; not counted above): {error}")
    if p.launcher:
        lines.append(_array_line(p))
    return "\n".join(lines)


def _array_line(p: Plan) -> str:
    from hydra_plugins.bench_plugins.grouped import group_of

    a = p.launcher
    # bench's sweeper launches only the jobs not finished in their folders; group_by puts the
    # jobs sharing those choices in one task
    launched = [j for j in p.jobs if not j.skipped.startswith("finished")]
    tasks = len({group_of(j.overrides, a["group_by"]) for j in launched} if a["group_by"]
                else launched)
    if not tasks:
        return "SLURM array: none (every job is finished in its folder)"
    parallel = min(tasks, a["parallel"] or tasks)
    grouped = f", one per {'/'.join(a['group_by'])}" if a["group_by"] else ""
    line = (f"SLURM array: {tasks} task(s){grouped} (--array=0-{tasks - 1}%{parallel}), each "
            f"partition={a['partition'] or '(default)'}, gpus={a['gpus']}, cpus={a['cpus']}, "
            f"mem={a['mem_gb']} GB, timeout={a['timeout_min']} min")
    if p.seconds:
        line += (f"; the known work over {parallel} task(s) at once: at least "
                 f"{math.ceil(p.seconds / parallel / 60)} min of wall time")
    return line


def main(argv: list[str]) -> int:
    """`bench plan OVERRIDES...`; 0, or 2 with one line on stderr for bad input."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s bench plan: %(message)s")
    try:
        print(format_plan(plan(_overrides(argv))))
    except BenchError as e:
        print(f"bench plan: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
