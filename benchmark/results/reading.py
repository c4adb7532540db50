"""Reading results back: the job directories under some folders, their rows and configs.

Only finished jobs are read (status.json says `done`): a job killed while it wrote its
samples.csv leaves part of its rows, which would be averaged into a table as if they were
all. The jobs left out, and those whose files cannot be read, are named in one warning;
`strict` stops at them instead.
"""

import importlib
import logging
import re
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.errors import BenchError, first_few
from benchmark.results.job_files import job_stats, read_status
from benchmark.schema import ROW_COLUMNS

log = logging.getLogger(__name__)
JOB_MARKERS = ("samples.csv", "status.json")  # either marks a job directory, finished or not


def _natural(path: Path) -> list:
    """Sort key: 2_... before 10_... (Hydra numbers the jobs of a sweep)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def job_dirs(dirs: list[str | Path]) -> list[Path]:
    """Every job directory under `dirs`, finished or not."""
    found = []
    for d in dirs:
        d = Path(d)
        if d.is_file() and d.name in JOB_MARKERS:
            found.append(d.parent)
        elif d.is_dir():
            marked = {p.parent for name in JOB_MARKERS for p in d.rglob(name)}
            found += sorted(marked, key=_natural)
        else:
            raise BenchError(f"{d}: not a job or sweep directory (no such directory)")
    if not found:
        raise BenchError(f"no samples.csv under {', '.join(map(str, dirs))}")
    return list(dict.fromkeys(found))


def leave_out(problems: list[str], what: str, strict: bool, anything_left: bool) -> None:
    """One warning naming what is left out; with `strict`, or when nothing is left, stop."""
    if not problems:
        return
    listed = f"{len(problems)} {what}: {first_few(problems, limit=10)}"
    if strict:
        raise BenchError(f"--strict: {listed}")
    if not anything_left:
        raise BenchError(f"nothing left to read: {listed}")
    log.warning("left out %s", listed)


def _unfinished(job: Path) -> str | None:
    """Why the job's results are not final, if they are not."""
    if not (job / "status.json").is_file():
        return "no status.json; every bench job writes one, older versions too"
    status = read_status(job)
    state = status.get("status") if isinstance(status, dict) else None
    if state in (None, "corrupt"):
        return "corrupt status.json"
    return None if state == "done" else str(state)


def finished_jobs(dirs: list[str | Path], strict: bool = False) -> list[Path]:
    """The job directories under `dirs` whose status.json says done."""
    jobs = job_dirs(dirs)
    why = {job: _unfinished(job) for job in jobs}
    done = [job for job in jobs if why[job] is None]
    leave_out([f"{job} ({w})" for job, w in why.items() if w], "job(s) that are not done",
              strict, bool(done))
    return done


def read_csv_file(path: Path, columns: list[str], name: str | None = None,
                  numeric: tuple[str, ...] = (), **options) -> pd.DataFrame:
    """A CSV file with these columns (`numeric` ones holding numbers), or a BenchError that
    names it (as `name`, default its path) and says what was expected."""
    expected = f"{name or path}: expected a CSV file with the columns {', '.join(columns)}"
    try:
        frame = pd.read_csv(path, **options)
    except OSError as e:
        raise BenchError(f"{expected}; cannot read it ({e.strerror or e})") from None
    except pd.errors.EmptyDataError:
        raise BenchError(f"{expected}; it is empty") from None
    except UnicodeDecodeError:
        raise BenchError(f"{expected}; it is not text") from None
    except ValueError as e:  # pandas' ParserError among them
        raise BenchError(f"{expected}; it does not parse ({str(e).splitlines()[-1]})") from None
    if not set(columns) <= set(frame.columns):
        raise BenchError(f"{expected}; its columns are {', '.join(map(str, frame.columns))}")
    for column in numeric:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & numbers.isna()
        if bad.any():
            line = int(bad.to_numpy().argmax()) + 2  # 1-based, after the header
            raise BenchError(f"{expected}; its {column} at line {line} is "
                             f"{frame[column][bad].iloc[0]!r}, not a number")
        frame[column] = numbers
    return frame


def _read_samples(job: Path) -> pd.DataFrame:
    frame = read_csv_file(job / "samples.csv", ROW_COLUMNS, numeric=("value",),
                          dtype={"image_id": str})
    frame["job"] = str(job)
    return frame


def load_samples(dirs: list[str | Path], strict: bool = False) -> pd.DataFrame:
    """The rows of every finished job under `dirs` (a column `job` says whose)."""
    frames, problems = [], []
    for job in finished_jobs(dirs, strict):
        try:
            frames.append(_read_samples(job))
        except BenchError as e:
            problems.append(str(e))
    leave_out(problems, "job(s) whose samples.csv cannot be read", strict, bool(frames))
    return pd.concat(frames, ignore_index=True)


def job_config(job: str | Path) -> dict:
    path = Path(job) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as e:
        raise BenchError(f"{path}: expected the job's config (YAML); cannot read it "
                         f"({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise BenchError(f"{path}: expected the job's config (YAML keys); it holds a "
                         f"{type(config).__name__}")
    return config


def provenance_records(jobs: list[str | Path]) -> list[dict | None]:
    """The provenance records of what made these jobs' numbers: each job's own and those of
    the cached entries it read that another environment made; None for a job that records
    none (written by a bench before provenance)."""
    records: list[dict | None] = []
    for job in jobs:
        stats = job_stats(job)
        own = stats.get("provenance")
        if not isinstance(own, dict):
            records.append(None)
            continue
        cached = stats.get("cached_provenance")
        records += [own] + [entry.get("provenance") for entry in
                            (cached if isinstance(cached, list) else [])
                            if isinstance(entry, dict)]
    return records


def metric_directions(jobs: list[str | Path]) -> dict[str, bool | None]:
    """higher_is_better of every metric the jobs computed: as each job recorded it in its
    stats.json, else (jobs written before it did) from the classes their configs name, which
    imports the metric's module (and torch)."""
    directions: dict[str, bool | None] = {}
    for job in jobs:
        recorded = job_stats(job).get("directions")
        if isinstance(recorded, dict):
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
