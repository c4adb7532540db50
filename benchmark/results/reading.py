"""Reading results back: the job directories under some folders, their rows and configs."""

import importlib
import json
import re
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from benchmark.errors import BenchError


def _natural(path: Path) -> list:
    """Sort key: 2_... before 10_... (Hydra numbers the jobs of a sweep)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def job_dirs(dirs: list[str | Path]) -> list[Path]:
    found = []
    for d in dirs:
        d = Path(d)
        if d.is_file() and d.name == "samples.csv":
            found.append(d.parent)
        elif d.is_dir():
            found += sorted((p.parent for p in d.rglob("samples.csv")), key=_natural)
        else:
            raise BenchError(f"{d}: not a job or sweep directory (no such directory)")
    if not found:
        raise BenchError(f"no samples.csv under {', '.join(map(str, dirs))}")
    return list(dict.fromkeys(found))


def load_samples(dirs: list[str | Path]) -> pd.DataFrame:
    frames = []
    for job in job_dirs(dirs):
        frame = pd.read_csv(job / "samples.csv", dtype={"image_id": str})
        frame["job"] = str(job)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def job_config(job: str | Path) -> dict:
    path = Path(job) / "config.yaml"
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def metric_directions(jobs: list[str | Path]) -> dict[str, bool | None]:
    """higher_is_better of every metric the jobs computed: as each job recorded it in its
    stats.json, else (jobs written before it did) from the classes their configs name, which
    imports the metric's module (and torch)."""
    directions: dict[str, bool | None] = {}
    for job in jobs:
        try:
            recorded = json.loads((Path(job) / "stats.json").read_text()).get("directions")
        except (OSError, ValueError):
            recorded = None
        if recorded is not None:
            for name, direction in recorded.items():
                directions.setdefault(name, direction)
            continue
        for name, node in (job_config(job).get("metric") or {}).items():
            target = str((node or {}).get("_target_", ""))
            if name in directions or not target.startswith("benchmark."):
                continue
            module, _, cls = target.rpartition(".")
            try:
                directions[name] = getattr(importlib.import_module(module), cls).higher_is_better
            except (ImportError, AttributeError):
                directions[name] = None
    return directions
