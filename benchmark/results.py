"""Per-sample rows, summaries and paper-style tables.

A job directory holds `samples.csv` (long format, one row per image x pair x
metric; set-level metrics have image_id `*` and `n` = the set size),
`summary.csv` (mean, std, n and a 95% t-interval per group), `stats.json` and
the resolved `config.yaml`.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.special import stdtrit

from benchmark.errors import BenchError
from benchmark.runner import ROW_COLUMNS, JobResult

GROUP_COLUMNS = ["dataset", "defense", "transform", "generator", "pair", "metric"]
FORMATS = ("csv", "md", "latex")
AGGREGATES = ("mean", "std", "ci")


def _ci_halfwidth(std: float, n: int) -> float:
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
            half = _ci_halfwidth(std, n)
        out.append({**dict(zip(GROUP_COLUMNS, key)), "mean": mean, "std": std, "n": n,
                    "ci95_low": mean - half, "ci95_high": mean + half})
    return pd.DataFrame(out, columns=GROUP_COLUMNS + ["mean", "std", "n", "ci95_low", "ci95_high"])


def write_job(outdir: str | Path, result: JobResult, cfg: DictConfig) -> pd.DataFrame:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    samples = pd.DataFrame(result.rows, columns=ROW_COLUMNS)
    samples.to_csv(outdir / "samples.csv", index=False)
    summary = summarize(samples)
    summary.to_csv(outdir / "summary.csv", index=False)
    stats = {**result.stats, "labels": result.labels, "notice": cfg.get("notice")}
    (outdir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (outdir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    view = summary[["pair", "metric", "mean", "std", "n", "ci95_low", "ci95_high"]].copy()
    view["95% CI"] = [
        "" if not math.isfinite(lo) else f"[{lo:.4g}, {hi:.4g}]"
        for lo, hi in zip(view.pop("ci95_low"), view.pop("ci95_high"))
    ]
    return view.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")


def load_samples(dirs: list[str | Path]) -> pd.DataFrame:
    files = []
    for d in dirs:
        d = Path(d)
        if d.is_file() and d.name == "samples.csv":
            files.append(d)
        elif d.is_dir():
            files += sorted(d.rglob("samples.csv"))
        else:
            raise BenchError(f"{d}: not a job or sweep directory (no such directory)")
    if not files:
        raise BenchError(f"no samples.csv under {', '.join(map(str, dirs))}")
    frames = [pd.read_csv(f, dtype={"image_id": str}) for f in files]
    return pd.concat(frames, ignore_index=True)


def _cell(values: np.ndarray, n_set: int, agg: str) -> tuple[float, str]:
    mean = float(np.mean(values))
    if agg == "mean" or len(values) < 2:
        return mean, f"{mean:.4f}"
    std = float(np.std(values, ddof=1))
    spread = std if agg == "std" else _ci_halfwidth(std, len(values))
    return mean, f"{mean:.4f} ± {spread:.4f}"


def make_table(samples: pd.DataFrame, rows: str, cols: str, metric: str, pair: str,
               agg: str = "mean", fmt: str = "md") -> str:
    for option, value in (("--rows", rows), ("--cols", cols)):
        if value not in samples.columns or value in ("value", "n"):
            raise BenchError(f"{option} {value}: not a column; choose from "
                             f"{[c for c in ROW_COLUMNS if c not in ('value', 'n')]}")
    if agg not in AGGREGATES:
        raise BenchError(f"--agg {agg}: expected one of {AGGREGATES}")
    if fmt not in FORMATS:
        raise BenchError(f"--format {fmt}: expected one of {FORMATS}")
    chosen = samples[(samples["metric"] == metric) & (samples["pair"] == pair)]
    if chosen.empty:
        have = samples.groupby(["metric", "pair"]).size().index.tolist()
        raise BenchError(f"no rows for --metric {metric} --pair {pair}; the results hold "
                         + ", ".join(f"{m}/{p}" for m, p in have))
    cells = {}
    for (r, c), group in chosen.groupby([rows, cols], sort=False):
        cells[(r, c)] = _cell(group["value"].to_numpy(dtype=float), int(group["n"].max()), agg)[1]
    row_keys = list(dict.fromkeys(chosen[rows]))
    col_keys = list(dict.fromkeys(chosen[cols]))
    table = pd.DataFrame([[cells.get((r, c), "") for c in col_keys] for r in row_keys],
                         index=pd.Index(row_keys, name=rows), columns=col_keys)
    table.columns.name = cols
    if fmt == "csv":
        return table.to_csv()
    if fmt == "md":
        caption = f"{metric} on pair `{pair}` ({agg})\n\n"
        return caption + table.to_markdown() + "\n"
    return table.to_latex(caption=f"{metric} on pair {pair} ({agg})", escape=True)
