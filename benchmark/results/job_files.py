"""One job's files and status: what `bench run` writes and what a sweep reads back.

A job directory holds `samples.csv` (long format, one row per image x pair x
metric; set-level metrics have image_id `*` and `n` = the set size),
`summary.csv` (mean, std, n and a 95% t-interval per group), `images.csv`
(where each image the job made lives in the content-addressed cache),
`stats.json`, `status.json` and the resolved `config.yaml`.
"""

import json
import logging
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.special import stdtrit

from benchmark.schema import (
    GROUP_COLUMNS,
    IMAGE_COLUMNS,
    ROW_COLUMNS,
    SUMMARY_COLUMNS,
    SWEEP_COLUMNS,
    JobResult,
)

log = logging.getLogger(__name__)


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


def write_job(outdir: str | Path, result: JobResult, cfg: DictConfig,
              notice: str | None = None) -> pd.DataFrame:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    samples = pd.DataFrame(result.rows, columns=ROW_COLUMNS)
    samples.to_csv(outdir / "samples.csv", index=False)
    summary = summarize(samples)
    summary.to_csv(outdir / "summary.csv", index=False)
    pd.DataFrame(result.images, columns=IMAGE_COLUMNS).to_csv(outdir / "images.csv", index=False)
    stats = {**result.stats, "labels": result.labels, "notice": notice}
    (outdir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (outdir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
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
    plain = {k: v for k, v in plain.items() if k not in ("cache_dir", "cache_lock", "notice")}
    return cache_key("config", plain, "1", [], None)


def read_status(outdir: str | Path) -> dict:
    try:
        return json.loads((Path(outdir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def write_status(outdir: Path, status: str, error: str | None = None,
                  fingerprint: str | None = None) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "error": error, "fingerprint": fingerprint,
              "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    tmp = outdir / f".status.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, outdir / "status.json")


def other_run(status: dict, fingerprint: str | None) -> str | None:
    """What in a job directory's status says it belongs to another run, if anything."""
    from benchmark.cache import pid_alive

    if not status:
        return None
    pid = int(status.get("pid") or -1)
    live = (status.get("status") == "running" and pid != os.getpid()
            and (status.get("host") != socket.gethostname() or pid_alive(pid)))
    if live:
        return f"a running job (pid {pid} on {status.get('host')})"
    if status.get("status") == "done" and status.get("fingerprint") != fingerprint:
        return ("the finished results of a job with another config (or of the same one run by "
                "an older bench, whose config had fewer keys: its cached stage outputs make a "
                "rerun in a new directory cheap)")
    return None


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


def sweep_summary(sweep_dir: str | Path) -> pd.DataFrame:
    """One table for a sweep: every job's summary rows, and one row per failed or unfinished job."""
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
            frames.append(frame)
        else:
            error = (status.get("error") or "").strip().splitlines()
            frames.append(pd.DataFrame([{"job": name, "status": state,
                                         "error": error[-1] if error else ""}]))
    if not frames:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    return pd.concat(frames, ignore_index=True).reindex(columns=SWEEP_COLUMNS)
