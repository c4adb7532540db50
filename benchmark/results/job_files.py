"""One job's files and status: what `bench run` writes and what a sweep reads back.

A job directory holds `samples.csv` (long format, one row per image x pair x
metric; set-level metrics have image_id `*` and `n` = the set size),
`summary.csv` (mean, std, n and a 95% t-interval per group), `images.csv`
(where each image the job made lives in the content-addressed cache),
`stats.json` (with the provenance record of what made the numbers: benchmark.provenance),
`status.json` and the resolved `config.yaml`.
"""

import errno
import json
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.special import stdtrit
from typing_extensions import Self

from benchmark.errors import BenchError, first_few
from benchmark.provenance import FLAT_COLUMNS, flat
from benchmark.schema import (
    GROUP_COLUMNS,
    IMAGE_COLUMNS,
    ROW_COLUMNS,
    SUMMARY_COLUMNS,
    SWEEP_COLUMNS,
    JobResult,
)

log = logging.getLogger(__name__)

# what bench and Hydra write in a job directory (anything else is a user's file)
JOB_FILES = frozenset({"samples.csv", "summary.csv", "images.csv", "stats.json", "status.json",
                       "config.yaml", ".hydra", ".submitit"})
# keys whose `${oc.env:...}` value config.yaml keeps resolved: paths, not secrets
PATH_KEY_ENDINGS = ("root", "dir", "path", "file", "weights", "folder")
HEARTBEAT_SECONDS = 30.0
STALE_AFTER = 300.0


def ci_halfwidth(std: float, n: int) -> float:
    if n < 2 or not math.isfinite(std):
        return math.nan
    return float(stdtrit(n - 1, 0.975) * std / math.sqrt(n))


def summarize(samples: pd.DataFrame) -> pd.DataFrame:
    out = []
    for key, group in samples.groupby(GROUP_COLUMNS, sort=False, dropna=False):
        values = group["value"].to_numpy(dtype=float)
        if (group["image_id"] == "*").all():
            mean, std, n = float(values.mean()), math.nan, int(group["n"].max())
            half = math.nan
        else:
            n = len(values)
            with np.errstate(invalid="ignore"):
                mean = float(values.mean())
                std = float(values.std(ddof=1)) if n > 1 else math.nan
            half = ci_halfwidth(std, n)
        out.append({**dict(zip(GROUP_COLUMNS, key)), "mean": mean, "std": std, "n": n,
                    "ci95_low": mean - half, "ci95_high": mean + half})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file next to `path` and rename it into place, so that a
    killed job leaves the old file or the new one, never half of one; a full disk is one line."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise BenchError(f"cannot write {path}: no space left on device; free space (or "
                             f"choose another hydra.run.dir) and re-run: finished stage outputs "
                             f"are in the cache") from None
        raise


def shareable_config(cfg: DictConfig) -> dict:
    """The resolved config as written to config.yaml, except that a value read from the
    environment (`${oc.env:...}`) stays the interpolation, unless its key names a path: a
    token in the environment must not land in files that people share."""
    plain = OmegaConf.to_container(cfg, resolve=True)

    def keep(node, raw, key: str):
        if isinstance(raw, str) and "${oc.env:" in raw and not _path_like(key):
            return raw
        if isinstance(node, dict) and isinstance(raw, dict):
            return {k: keep(v, raw.get(k), k) for k, v in node.items()}
        if isinstance(node, list) and isinstance(raw, list) and len(node) == len(raw):
            return [keep(v, r, key) for v, r in zip(node, raw)]
        return node

    return keep(plain, OmegaConf.to_container(cfg, resolve=False), "")


def _path_like(key: str) -> bool:
    return key.endswith(PATH_KEY_ENDINGS)


def write_job(outdir: str | Path, result: JobResult, cfg: DictConfig,
              notice: str | None = None) -> pd.DataFrame:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    samples = pd.DataFrame(result.rows, columns=ROW_COLUMNS)
    summary = summarize(samples)
    stats = {**result.stats, "labels": result.labels, "notice": notice}
    files = {
        "samples.csv": samples.to_csv(index=False),
        "summary.csv": summary.to_csv(index=False),
        "images.csv": pd.DataFrame(result.images, columns=IMAGE_COLUMNS).to_csv(index=False),
        "stats.json": json.dumps(stats, indent=2) + "\n",
        "config.yaml": OmegaConf.to_yaml(OmegaConf.create(shareable_config(cfg))),
    }
    for name, text in files.items():
        write_atomic(outdir / name, text)
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    columns = ["pair", "metric", "mean", "std", "n", "ci95_low", "ci95_high"]
    if summary["generator"].nunique() > 1:  # one job, several edits (generator.target=all)
        columns.insert(0, "generator")
    view = summary[columns].copy()
    view["95% CI"] = [
        "" if not math.isfinite(lo) else f"[{lo:.4g}, {hi:.4g}]"
        for lo, hi in zip(view.pop("ci95_low"), view.pop("ci95_high"))
    ]
    return view.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")


def config_fingerprint(cfg: DictConfig | dict) -> str:
    """Identity of a job's resolved config, without the keys that say where or how it runs."""
    from benchmark.cache import cache_key

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    plain = {k: v for k, v in plain.items()
             if k not in ("cache_dir", "cache_lock", "notice", "threads")}
    return cache_key("config", plain, "1", [], None)


def read_status(outdir: str | Path) -> dict:
    """A job's status record: {} when there is none; status `corrupt` when it cannot be read."""
    path = Path(outdir) / "status.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        return {"status": "corrupt", "error": f"{path} cannot be read: {e}"}
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
        return {"status": "corrupt", "error": f"{path} is not a bench status record"}
    return record


def write_status(outdir: Path, status: str, error: str | None = None,
                  fingerprint: str | None = None, launch_key: str | None = None) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "error": error, "fingerprint": fingerprint,
              "launch_key": launch_key,
              "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    write_atomic(outdir / "status.json", json.dumps(record) + "\n")


class StatusHeartbeat:
    """While a job runs, refresh its status.json's mtime every `interval` seconds, so that a
    job on another host can tell a live run from one whose process died (as the cache's locks
    do): a `running` record older than STALE_AFTER seconds is taken over."""

    def __init__(self, outdir: Path, interval: float = HEARTBEAT_SECONDS):
        self.path, self.interval = Path(outdir) / "status.json", interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="bench-job-heartbeat")

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                os.utime(self.path)
            except OSError:
                pass  # the directory went away: the job's own writes report it


def status_age(outdir: str | Path) -> float:
    try:
        return time.time() - (Path(outdir) / "status.json").stat().st_mtime
    except OSError:
        return math.inf


def live_elsewhere(outdir: str | Path, status: dict) -> bool:
    """A `running` record of another process that is still alive (same host: its pid; other
    hosts: a heartbeat younger than STALE_AFTER)."""
    from benchmark.cache import pid_alive

    pid = int(status.get("pid") or -1)
    if status.get("status") != "running" or pid == os.getpid() and \
            status.get("host") == socket.gethostname():
        return False
    if status.get("host") == socket.gethostname():
        return pid_alive(pid)
    return status_age(outdir) < STALE_AFTER


def other_run(status: dict, fingerprint: str | None, outdir: str | Path = ".") -> str | None:
    """What in a job directory's status says it belongs to another run, if anything."""
    if not status:
        return None
    if status.get("status") == "corrupt":
        return (f"a status.json that cannot be read ({status['error']}); delete it to reuse "
                f"the directory")
    pid = int(status.get("pid") or -1)
    if live_elsewhere(outdir, status):
        return (f"a running job (pid {pid} on {status.get('host')}, last heartbeat "
                f"{status_age(outdir):.0f}s ago; a dead job's claim lapses {STALE_AFTER:.0f}s "
                f"after its last heartbeat)")
    if status.get("status") == "done" and status.get("fingerprint") != fingerprint:
        return ("the finished results of a job with another config (or of the same one run by "
                "an older bench, whose config had fewer keys: its cached stage outputs make a "
                "rerun in a new directory cheap)")
    return None


def check_job_dir(outdir: Path) -> None:
    """Refuse a job directory that holds files bench did not write (a user's own folder) or a
    status.json that cannot be read: never write into them."""
    if not outdir.is_dir():
        return
    status = read_status(outdir)
    if status.get("status") == "corrupt":
        raise BenchError(f"{outdir}: {other_run(status, None, outdir)}; its files are kept. "
                         f"Choose another directory (hydra.run.dir=... / hydra.sweep.dir=...)")
    if status:
        return
    foreign = sorted(p.name for p in outdir.iterdir() if not _bench_file(p.name))
    if foreign:
        raise BenchError(f"{outdir} holds files that are not a bench job's ({first_few(foreign)})"
                         f"; it is left as it is. Choose another directory (hydra.run.dir=... / "
                         f"hydra.sweep.dir=...)")


def _bench_file(name: str) -> bool:
    return (name in JOB_FILES or name.endswith(".log")
            or (name.startswith(".") and name.endswith(".tmp")))


def is_finished(outdir: str | Path, fingerprint: str) -> bool:
    """The job in `outdir` ran to the end with this config and its results are all there."""
    outdir = Path(outdir)
    status = read_status(outdir)
    return (status.get("status") == "done" and status.get("fingerprint") == fingerprint
            and all((outdir / f).is_file() for f in ("samples.csv", "summary.csv", "stats.json")))


def wait_for_live_run(outdir: str | Path, poll: float = 1.0) -> None:
    """Wait while another live process on this host runs the job in `outdir`.

    A sweep killed on the launching machine can leave its job processes running
    (submitit_local starts them as children); re-running the sweep must not start a second
    copy of a job that is still computing. Other hosts' "running" records cannot be checked
    and may be stale, so they are not waited for.
    """
    from benchmark.cache import pid_alive

    logged = False
    while True:
        status = read_status(outdir)
        pid = int(status.get("pid") or -1)
        if (status.get("status") != "running" or status.get("host") != socket.gethostname()
                or pid in (-1, os.getpid()) or not pid_alive(pid)):
            return
        if not logged:
            log.warning(
                "%s: process %d is still running this job; waiting for it", outdir, pid)
            logged = True
        time.sleep(poll)


def job_stats(outdir: str | Path) -> dict:
    """A job's stats.json; {} when it is missing or unreadable."""
    try:
        stats = json.loads((Path(outdir) / "stats.json").read_text())
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def job_provenance(outdir: str | Path) -> dict | None:
    """The provenance record of a job's numbers; None when it has none (an older bench)."""
    record = job_stats(outdir).get("provenance")
    return record if isinstance(record, dict) else None


def sweep_summary(sweep_dir: str | Path) -> pd.DataFrame:
    """One table for a sweep: every job's summary rows with the provenance of its numbers
    (FLAT_COLUMNS), and one row per failed or unfinished job."""
    sweep_dir = Path(sweep_dir)
    frames = []
    def job_order(path: Path):  # Hydra numbers the jobs: 0_..., 1_..., 10_...
        head = path.relative_to(sweep_dir).parts[0].split("_", 1)[0]
        return (int(head) if head.isdigit() else math.inf, str(path))

    for status_file in sorted(sweep_dir.rglob("status.json"), key=job_order):
        job = status_file.parent
        status = read_status(job)
        name = job.relative_to(sweep_dir).as_posix()
        state = status.get("status", "unknown")
        summary_file = job / "summary.csv"
        if state == "done" and summary_file.is_file():
            frame = pd.read_csv(summary_file)
            frame.insert(0, "job", name)
            frame.insert(1, "status", state)
            frame.insert(2, "error", "")
            frames.append(frame.assign(**flat(job_provenance(job))))
        else:
            error = (status.get("error") or "").strip().splitlines()
            frames.append(pd.DataFrame([{"job": name, "status": state,
                                         "error": error[-1] if error else ""}]))
    columns = SWEEP_COLUMNS + FLAT_COLUMNS
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)
