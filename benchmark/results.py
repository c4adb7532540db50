"""Per-sample rows, summaries, sweep summaries and paper-style tables.

A job directory holds `samples.csv` (long format, one row per image x pair x
metric; set-level metrics have image_id `*` and `n` = the set size),
`summary.csv` (mean, std, n and a 95% t-interval per group), `images.csv`
(where each image the job made lives in the content-addressed cache),
`stats.json`, `status.json` and the resolved `config.yaml`.

Tables (`bench table`) put rows x columns of one pair for one or several
metrics; a cell aggregates the per-image values with `mean`, `std` (mean ±
std), `ci` (mean and a seeded percentile-bootstrap 95% interval of the mean) or
`worst` (adds, per row, the per-image worst case over the columns: for each
image the column most favourable to the editor, as BlurGuard (Kim et al. 2025)
reports robustness over a set of reversal techniques). The pseudo-pair `drop`
is, per image, the value on `protection` minus the value on `edit`: how far the
transformation moved the edit away from the protected edit.
"""

import io
import json
import logging
import math
import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.special import stdtrit

from benchmark.errors import BenchError
from benchmark.runner import ROW_COLUMNS, JobResult

log = logging.getLogger(__name__)

GROUP_COLUMNS = ["dataset", "defense", "transform", "generator", "pair", "metric"]
LABEL_COLUMNS = ["dataset", "defense", "transform", "generator"]
FORMATS = ("csv", "md", "latex")
AGGREGATES = ("mean", "std", "ci", "worst")
DERIVED_PAIRS = {"drop": ("protection", "edit")}
# path: the clean image's file; generator: the edit's label (several with generator.target=all)
IMAGE_COLUMNS = ["image_id", "image", "stage", "key", "path", "generator"]
SUMMARY_COLUMNS = GROUP_COLUMNS + ["mean", "std", "n", "ci95_low", "ci95_high"]
SWEEP_COLUMNS = ["job", "status", "error"] + SUMMARY_COLUMNS


# -- one job ------------------------------------------------------------------------------------

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


# -- job status and sweeps ----------------------------------------------------------------------

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
    from benchmark.cache import _pid_alive

    logged = False
    while True:
        status = read_status(outdir)
        pid = int(status.get("pid") or -1)
        if (status.get("status") != "running" or status.get("host") != socket.gethostname()
                or pid in (-1, os.getpid()) or not _pid_alive(pid)):
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


# -- reading results back -----------------------------------------------------------------------

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
    """higher_is_better of every metric the jobs computed, from the classes their configs name."""
    import importlib

    directions: dict[str, bool | None] = {}
    for job in jobs:
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


# -- aggregation --------------------------------------------------------------------------------

def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded, so a table is reproducible)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _number(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    text = f"{v:.4f}"
    return "0.0000" if text == "-0.0000" else text


def _select(samples: pd.DataFrame, metric: str, pair: str) -> pd.DataFrame:
    """Rows of one metric on one pair; `drop` = protection - edit, matched per image and job."""
    chosen = samples[samples["metric"] == metric]
    if pair not in DERIVED_PAIRS:
        return chosen[chosen["pair"] == pair]
    first, second = DERIVED_PAIRS[pair]
    keys = [c for c in ROW_COLUMNS if c not in ("pair", "value", "n")]
    a = chosen[chosen["pair"] == first]
    b = chosen[chosen["pair"] == second]
    merged = a.merge(b[keys + ["value"]], on=keys, suffixes=("", "_b"))
    with np.errstate(invalid="ignore"):
        merged["value"] = merged["value"] - merged.pop("value_b")
    merged["pair"] = pair
    return merged


def _editor_best(direction: bool | None, pair: str) -> bool:
    """True when larger values favour the editor (the worst case for the defense)."""
    if direction is None:
        raise BenchError("--agg worst needs a metric with a direction (higher_is_better)")
    # edit/fidelity/control: closer to the clean (reference) image favours the editor; on
    # `drop` (protection - edit) the editor gains when the edit value improves, i.e. drop falls
    return direction if pair not in DERIVED_PAIRS else not direction


class _Cell:
    def __init__(self, values: np.ndarray, set_level: bool, agg: str, seed: int):
        with np.errstate(invalid="ignore"):
            self.mean = float(np.mean(values)) if len(values) else math.nan
        self.spread = ""
        if set_level or len(values) < 2 or agg in ("mean", "worst"):
            return
        if not np.isfinite(values).all():
            return  # e.g. PSNR of identical images (inf): no spread to speak of
        if agg == "std":
            self.spread = f" ± {_number(float(np.std(values, ddof=1)))}"
        else:
            low, high = bootstrap_ci(values, seed)
            self.spread = f" [{_number(low)}, {_number(high)}]"

    def text(self, bold: bool, fmt: str) -> str:
        body = _number(self.mean) + self.spread
        if bold and fmt == "md":
            return f"**{body}**"
        if bold and fmt == "latex":
            return f"\\textbf{{{body}}}"
        return body


def _worst(group: pd.DataFrame, cols: str, editor_gains_up: bool) -> tuple[np.ndarray, bool]:
    """Per image, the value of the column most favourable to the editor."""
    set_level = (group["image_id"] == "*").all()
    per_image = group.pivot_table(index="image_id", columns=cols, values="value",
                                  aggfunc="mean")
    pick = per_image.max(axis=1) if editor_gains_up else per_image.min(axis=1)
    return pick.to_numpy(dtype=float), set_level


def _check_single_valued(chosen: pd.DataFrame, used: list[str]) -> None:
    for column in LABEL_COLUMNS:
        if column in used:
            continue
        values = sorted(chosen[column].astype(str).unique())
        if len(values) > 1:
            raise BenchError(f"the results hold several {column}s ({', '.join(values)}): choose "
                             f"one with --where {column}={values[0]} or use it as --rows/--cols")


def parse_where(where: list[str] | None) -> dict[str, list[str]]:
    out = {}
    for item in where or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise BenchError(f"--where {item}: expected KEY=VALUE[,VALUE...]")
        out[key] = value.split(",")
    return out


def _filter(samples: pd.DataFrame, where: dict[str, list[str]]) -> pd.DataFrame:
    """Keep rows whose column is one of the values; a key ending in `!` (KEY!=V) drops them."""
    for key, values in where.items():
        column, negate = key.rstrip("!"), key.endswith("!")
        if column not in samples.columns:
            raise BenchError(f"--where {column}: not a column; choose from {LABEL_COLUMNS}")
        keep = samples[column].astype(str).isin(values)
        samples = samples[~keep if negate else keep]
    return samples


def _arrow(direction: bool | None, fmt: str) -> str:
    if direction is None:
        return ""
    if fmt == "latex":
        return " $\\uparrow$" if direction else " $\\downarrow$"
    return " ↑" if direction else " ↓"


def make_table(samples: pd.DataFrame, rows: str, cols: str, metric: str | list[str], pair: str,
               agg: str = "mean", fmt: str = "md", directions: dict | None = None,
               seed: int = 0, where: dict[str, list[str]] | None = None) -> str:
    """Rows x columns of one pair for one or more metrics (several: a two-level header)."""
    metrics = metric.split(",") if isinstance(metric, str) else list(metric)
    labels = [c for c in ROW_COLUMNS if c not in ("value", "n", "pair", "metric")]
    for option, value in (("--rows", rows), ("--cols", cols)):
        if value not in labels:
            raise BenchError(f"--{option.lstrip('-')} {value}: not a column; choose from {labels}")
    if agg not in AGGREGATES:
        raise BenchError(f"--agg {agg}: expected one of {AGGREGATES}")
    if fmt not in FORMATS:
        raise BenchError(f"--format {fmt}: expected one of {FORMATS}")
    directions = directions or {}
    samples = _filter(samples, where or {})
    blocks = []  # (metric, column keys, {(row, col): _Cell}, direction)
    row_keys: list = []
    for name in metrics:
        chosen = _select(samples, name, pair)
        if chosen.empty:
            have = samples.groupby(["metric", "pair"]).size().index.tolist()
            raise BenchError(f"no rows for --metric {name} --pair {pair}; the results hold "
                             + ", ".join(f"{m}/{p}" for m, p in have))
        _check_single_valued(chosen, [rows, cols])
        direction = directions.get(name)
        cells = {}
        for (r, c), group in chosen.groupby([rows, cols], sort=False):
            set_level = (group["image_id"] == "*").all()
            cells[(r, c)] = _Cell(group["value"].to_numpy(dtype=float), set_level, agg, seed)
        col_keys = list(dict.fromkeys(chosen[cols]))
        if agg == "worst":
            up = _editor_best(direction, pair)
            for r, group in chosen.groupby(rows, sort=False):
                values, set_level = _worst(group, cols, up)
                cells[(r, "worst case")] = _Cell(values, set_level, "mean", seed)
            col_keys.append("worst case")
        row_keys += [r for r in dict.fromkeys(chosen[rows]) if r not in row_keys]
        blocks.append((name, col_keys, cells, direction))

    bold = set()
    if fmt != "csv":
        for name, col_keys, cells, direction in blocks:
            if direction is None:
                continue
            for c in col_keys:
                column = [(r, cells[(r, c)].mean) for r in row_keys
                          if (r, c) in cells and not math.isnan(cells[(r, c)].mean)]
                if len(column) < 2:
                    continue
                best = max(v for _, v in column) if direction else min(v for _, v in column)
                bold |= {(name, r, c) for r, v in column if _number(v) == _number(best)}

    def cell(name, cells, r, c):
        return cells[(r, c)].text((name, r, c) in bold, fmt) if (r, c) in cells else ""

    agg_words = {"mean": "mean over images", "std": "mean ± std over images",
                 "ci": f"mean [95% bootstrap CI, seed {seed}]",
                 "worst": "mean; worst case = per-image worst over the columns"}[agg]
    pair_words = ("protection − edit per image" if pair in DERIVED_PAIRS else f"pair {pair}")
    titles = [f"{name}{_arrow(d, fmt)}" for name, _, _, d in blocks]
    caption = f"{', '.join(titles)} on {pair_words} ({agg_words}; best in bold)"
    header = [(title, c) for title, (_, col_keys, _, _) in zip(titles, blocks) for c in col_keys]
    body = [[cell(name, cells, r, c) for name, col_keys, cells, _ in blocks for c in col_keys]
            for r in row_keys]

    if fmt == "csv":
        if len(blocks) == 1:
            columns = pd.Index([c for _, c in header], name=cols)
        else:
            columns = pd.MultiIndex.from_tuples(
                [(name, c) for name, col_keys, _, _ in blocks for c in col_keys],
                names=["metric", cols])
        return pd.DataFrame(body, index=pd.Index(row_keys, name=rows), columns=columns).to_csv()
    if fmt == "md":
        names = [str(c) if len(blocks) == 1 else f"{t} · {c}" for t, c in header]
        table = pd.DataFrame(body, index=pd.Index(row_keys, name=rows), columns=names)
        return f"{caption}\n\n" + table.to_markdown(disable_numparse=True) + "\n"
    return _latex(caption, rows, row_keys, header, body, len(blocks) > 1)


def _tex(text) -> str:
    out = str(text)
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                 ("#", "\\#"), ("{", "\\{"), ("}", "\\}"), ("±", "$\\pm$"), ("−", "$-$"),
                 ("×", "$\\times$"),
                 ("~", "\\textasciitilde{}"), ("^", "\\textasciicircum{}")):
        out = out.replace(a, b)
    return out.replace("\\textbackslash\\{\\}", "\\textbackslash{}")


def _latex(caption: str, rows: str, row_keys: list, header: list[tuple[str, str]],
           body: list[list[str]], grouped: bool) -> str:
    """booktabs table; cells are already LaTeX (bold), labels are escaped here."""
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_caption_tex(caption)}}}"]
    lines.append(f"\\begin{{tabular}}{{l{'c' * len(header)}}}")
    lines.append("\\toprule")
    if grouped:
        spans: list[tuple[str, int]] = []
        for title, _ in header:
            if spans and spans[-1][0] == title:
                spans[-1] = (title, spans[-1][1] + 1)
            else:
                spans.append((title, 1))
        cells, rules, start = [""], [], 2
        for title, width in spans:
            cells.append(f"\\multicolumn{{{width}}}{{c}}{{{_caption_tex(title)}}}")
            rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines.append(" & ".join(cells) + " \\\\")
        lines.append(" ".join(rules))
    lines.append(" & ".join([_tex(rows)] + [_tex(c) for _, c in header]) + " \\\\")
    lines.append("\\midrule")
    for r, values in zip(row_keys, body):
        lines.append(" & ".join([_tex(r)] + [v.replace("±", "$\\pm$") for v in values]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _caption_tex(text: str) -> str:
    """Escape a caption that may already hold the $\\uparrow$/$\\downarrow$ arrows."""
    parts = text.split("$")
    return "$".join(p if i % 2 else _tex(p) for i, p in enumerate(parts))


# -- our numbers next to the study's ------------------------------------------------------------

REPORTED_COLUMNS = ["table", "setting", "dataset", "defense", "transform", "generator", "pair",
                    "metric", "value", "paper_name", "source"]


def _base(label: str) -> str:
    return str(label).split("(", 1)[0]


def _matches(labels: pd.Series, wanted: str) -> pd.Series:
    """`advdm` matches advdm with any parameters; `advdm(direction=-)` only that label."""
    return labels == wanted if "(" in wanted else labels.map(_base) == wanted


def _not_built(ref: pd.Series) -> list[str]:
    """The config files a reported setting needs that this checkout lacks (group/name.yaml):
    a defense, transform or generator that nobody has added yet. Read from the config
    groups, so that a row turns from `not built` to `not run` when its yaml file appears."""
    from benchmark.paths import config_dir

    root = config_dir()
    needed = [("defense", ref.get("defense", "")), ("transform", ref.get("transform", "")),
              ("generator", ref.get("generator", ""))]
    return [f"{group}/{_base(name)}.yaml" for group, name in needed
            if name and name != "*" and not (root / group / f"{_base(name)}.yaml").is_file()]


def compare_reported(samples: pd.DataFrame, reported: str | Path, metrics: list[str] | str,
                     pair: str, fmt: str = "md", agg: str = "mean", seed: int = 0,
                     where: dict[str, list[str]] | None = None) -> str:
    """Each number the study reports for these metrics/pair, ours beside it, and ours - theirs."""
    metrics = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    if fmt not in FORMATS:
        raise BenchError(f"--format {fmt}: expected one of {FORMATS}")
    try:
        paper = pd.read_csv(reported, dtype=str, keep_default_na=False)
    except OSError as e:
        raise BenchError(f"--vs {reported}: cannot read ({e.strerror})") from None
    missing = [c for c in ("defense", "transform", "pair", "metric", "value") if c not in paper]
    if missing:
        raise BenchError(f"--vs {reported}: missing columns {missing}")
    paper = paper[paper["metric"].isin(metrics) & (paper["pair"] == pair)]
    if paper.empty:
        raise BenchError(f"--vs {reported}: the study reports nothing for --metric "
                         f"{','.join(metrics)} --pair {pair}")
    samples = _filter(samples, where or {})
    out = []
    for _, ref in paper.iterrows():
        mine = samples[(samples["metric"] == ref["metric"]) & (samples["pair"] == pair)]
        pooled = ref["defense"] == "*"  # the study names no defense: all protected images
        if pooled:
            mine = mine[mine["defense"].map(_base) != "none"]
        else:
            mine = mine[_matches(mine["defense"], ref["defense"])]
        if ref["transform"]:
            mine = mine[_matches(mine["transform"], ref["transform"])]
        if ref.get("generator"):
            mine = mine[_matches(mine["generator"], ref["generator"])]
        base = {"table": ref.get("table", ""), "setting": ref.get("setting", ""),
                "defense": ref.get("paper_name") or ref["defense"], "metric": ref["metric"],
                "paper": float(ref["value"])}
        if mine.empty:
            groups = []
        elif pooled:
            groups = [(("all defenses", t), g) for t, g in mine.groupby("transform", sort=False)]
        else:
            groups = list(mine.groupby(["defense", "transform"], sort=False))
        if not groups:
            missing = _not_built(ref)
            label = f"not built ({', '.join(missing)})" if missing else "not run"
            out.append({**base, "ours (label)": label, "ours": "", "ours − paper": ""})
        for (defense, transform), group in groups:
            c = _Cell(group["value"].to_numpy(dtype=float), (group["image_id"] == "*").all(),
                      agg, seed)
            out.append({**base, "ours (label)": f"{defense} × {transform}",
                        "ours": c.text(False, fmt),
                        "ours − paper": f"{c.mean - base['paper']:+.4f}"})
    table = pd.DataFrame(out)
    table["paper"] = table["paper"].map(_number)
    table = table[["defense", "metric", "ours (label)", "ours", "paper", "ours − paper", "table",
                   "setting"]]
    caption = (f"{', '.join(metrics)} on pair {pair}: ours ({agg}) beside the study's reported "
               f"value ({Path(reported).name})")
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "md":
        return f"{caption}\n\n" + table.to_markdown(index=False, disable_numparse=True) + "\n"
    header = [("", c) for c in table.columns[1:]]
    return _latex(caption, table.columns[0], list(table.iloc[:, 0]), header,
                  [[_tex(v) for v in row[1:]] for row in table.itertuples(index=False)], False)


def read_table_text(text: str) -> pd.DataFrame:
    """A csv table back as a frame (used by tests and scripts)."""
    return pd.read_csv(io.StringIO(text), index_col=0)
