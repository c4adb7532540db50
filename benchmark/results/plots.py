"""Figures from job and sweep directories: robustness curves, purifier cost, qualitative grid.

- `robustness_curves`: a metric on one pair against the strength of each
  transformation family (the transform parameter that varies across the jobs of
  the family, read from each job's resolved config), one line per defense with
  its 95% t-interval, the untransformed value (transform=identity) as a dotted
  line; a family without a numeric strength (one setting) is a point per setting
  at its label, with its interval. PNG and PDF.
- `purifier_cost`: per purifier (transform), its purification quality (a metric
  on a pair, `fidelity` by default; bars from 0) beside its cost in seconds per
  image of the transform stage (from stats.json of the run that computed it).
  PNG and PDF.
- `qualitative_grid`: for N images, clean | protected | transformed | edit of
  clean | edit of protected | edit of transformed (the columns the jobs made),
  one row per defense (at one transform) or per transform (for one defense),
  read back from the cache through each job's images.csv; an image gone from
  the cache, or unreadable there, is a cell that says so. One PNG.
"""

import hashlib
import io
import json
import math
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from benchmark.errors import BenchError
from benchmark.results.job_files import ci_halfwidth
from benchmark.results.reading import (
    finished_jobs,
    job_config,
    leave_out,
    load_samples,
    metric_directions,
    read_csv_file,
)
from benchmark.results.robustness import WEAKER_WHEN_LARGER, retention, strength_axes
from benchmark.results.tables import filter_rows, select_pair, write_output
from benchmark.schema import base_label

GRID_COLUMNS = [("x", "clean"), ("x_adv", "protected"), ("x_t", "transformed"),
                ("g_x", "edit of clean"), ("g_adv", "edit of protected"),
                ("g_t", "edit of transformed")]
# what a grid cell without its image says instead
NOT_MADE, REMOVED, UNREADABLE = ("not made\nby this job", "removed from\nthe cache",
                                 "unreadable\nin the cache")


def _save(fig, out: str | Path, formats: tuple[str, ...], name: str) -> list[Path]:
    """Write `out`.<ext> for each format; an existing folder (or `DIR/`) gets `DIR/<name>`."""
    if Path(out).is_dir() or str(out).endswith(("/", "\\")):
        out = Path(out) / name
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    try:
        return [write_output(stem.with_name(f"{stem.name}.{ext}"),
                             partial(fig.savefig, dpi=150, bbox_inches="tight"))
                for ext in formats]
    finally:
        plt.close(fig)


def _stats(job: Path) -> dict:
    try:
        stats = json.loads((job / "stats.json").read_text())
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def curve_points(samples: pd.DataFrame, metric: str, pair: str) -> pd.DataFrame:
    """The points of the robustness curves: per transform family, strength and defense, the
    mean over images and its 95% t half-width (family `identity` gives the reference)."""
    chosen = select_pair(samples, metric, pair)
    if chosen.empty:
        raise BenchError(f"no rows for --metric {metric} --pair {pair}")
    if chosen["generator"].nunique() > 1 or chosen["dataset"].nunique() > 1:
        raise BenchError("several generators or datasets in these results: choose one with "
                         "--where generator=... / --where dataset=...")
    axes = strength_axes(chosen)
    out = []
    for family, (key, values) in axes.items():
        rows = chosen[chosen["transform"].map(base_label) == family]
        strength = rows["job"].map(values)
        for (defense, x), group in rows.groupby([rows["defense"], strength], sort=False):
            v = group["value"].to_numpy(dtype=float)
            set_level = (group["image_id"] == "*").all()
            std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
            half = math.nan if set_level else ci_halfwidth(std, len(v))
            out.append({"family": family, "key": key, "strength": x, "defense": defense,
                        "label": group["transform"].iloc[0], "mean": float(np.mean(v)),
                        "half": half, "n": len(v)})
    return pd.DataFrame(out).sort_values(["family", "defense", "strength"], ignore_index=True)


def _draw_categories(ax, rows: pd.DataFrame, defenses: list[str], colors: dict) -> None:
    """A family without a numeric strength: a point per setting and defense at its label,
    side by side, with its 95% interval; no line, since the settings have no order."""
    ticks = rows.drop_duplicates("strength").sort_values("strength")
    ax.set_xticks(ticks["strength"], ticks["label"], fontsize=8)
    ax.set_xlim(-1, len(ticks))
    for i, defense in enumerate(defenses):
        mine = rows[rows["defense"] == defense]
        if not mine.empty:
            dodge = 0.12 * (i - (len(defenses) - 1) / 2)
            ax.errorbar(mine["strength"] + dodge, mine["mean"], yerr=mine["half"].fillna(0.0),
                        fmt="o", capsize=3, color=colors[defense], label=defense)


def _draw_curves(ax, rows: pd.DataFrame, defenses: list[str], colors: dict) -> None:
    for defense in defenses:
        mine = rows[rows["defense"] == defense]
        if mine.empty:
            continue
        xs, ys = mine["strength"].to_numpy(), mine["mean"].to_numpy()
        hs = mine["half"].fillna(0.0).to_numpy()
        ax.plot(xs, ys, marker="o", color=colors[defense], label=defense)
        if hs.any():
            ax.fill_between(xs, ys - hs, ys + hs, color=colors[defense], alpha=0.15, lw=0)


def retention_points(samples: pd.DataFrame, metric: str, direction: bool | None,
                     seed: int = 0) -> pd.DataFrame:
    """Retention rho(s) as curve points (mean, half-width of its bootstrap interval)."""
    points, _ = retention(samples, metric, direction, seed)
    return pd.DataFrame({"family": points["family"], "key": points["key"],
                         "strength": points["native"], "defense": points["defense"],
                         "label": points["family"], "mean": points["rho"],
                         "half": (points["high"] - points["low"]) / 2, "n": points["n"]})


def robustness_curves(dirs: list, metric: str, pair: str, out: str | Path,
                      where: dict | None = None, formats=("png", "pdf"),
                      strict: bool = False, retained: bool = False) -> list[Path]:
    samples = filter_rows(load_samples(dirs, strict), where or {})
    direction = metric_directions(list(samples["job"].unique())).get(metric)
    points = (retention_points(samples, metric, direction) if retained
              else curve_points(samples, metric, pair))
    identity = points[points["family"] == "identity"]
    families = [f for f in dict.fromkeys(points["family"]) if f != "identity"]
    if not families:
        raise BenchError("no transformed jobs to plot (only transform=identity)")
    defenses = list(dict.fromkeys(points["defense"]))
    colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(defenses)}
    fig, panels = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.4),
                               squeeze=False, sharey=True)
    arrow = "" if direction is None else (" ↑" if direction else " ↓")
    for ax, family in zip(panels[0], families):
        rows = points[points["family"] == family]
        key = rows["key"].iloc[0]
        key = key if isinstance(key, str) else None  # no numeric strength: categories
        (_draw_curves if key else _draw_categories)(ax, rows, defenses, colors)
        for defense in dict.fromkeys(rows["defense"]):
            ref = identity[identity["defense"] == defense]["mean"]
            if len(ref):
                ax.axhline(float(ref.mean()), color=colors[defense], ls=":", lw=1)
        if key in WEAKER_WHEN_LARGER:
            ax.invert_xaxis()
        ax.set_xlabel(f"{family}.{key} (stronger →)" if key else family)
        ax.set_title(family)
        ax.grid(alpha=0.3)
    panels[0][0].set_ylabel(f"retention of the protection ({metric})" if retained
                            else f"{metric}{arrow} on {pair}")
    handles, names = [], []
    for ax in panels[0]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5),
               bbox_to_anchor=(0.5, -0.02 - 0.06 * math.ceil(len(names) / 5)), frameon=False)
    fig.suptitle("retention of the protection vs transformation strength (1: as without it; "
                 "band: bootstrap 95% CI)" if retained else
                 f"{metric} on {pair} vs transformation strength (dotted: no transformation; "
                 "band: 95% CI)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out, formats, "curves")


def _recorded_seconds(job: Path) -> list[float]:
    """The transform's own time per image, as the cache recorded it for the job's images."""
    try:
        table = read_csv_file(job / "images.csv", ["image", "stage", "key"], dtype=str)
    except BenchError:  # none, or unreadable: no records to look up
        return []
    made = table[(table["image"] == "x_t") & (table["stage"] == "transform")]
    root = _cache_root(job, None)
    seconds = []
    for key in made["key"].dropna():
        try:
            record = json.loads((root / "transform" / key[:2] / f"{key}.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("seconds"), (int, float)):
            seconds.append(record["seconds"])
    return seconds


def _transform_cost(job: Path) -> float:
    """Seconds per image of the transform itself, from the cache entries' records of the run
    that computed them; else from the job's stage time (cache writes included); nan if unknown."""
    seconds = _recorded_seconds(job)
    if seconds:
        return float(np.median(seconds))
    stats = _stats(job)
    for record in (stats.get("original_run") or {}, stats):
        stage = (record.get("stages") or {}).get("transform") or {}
        if stage.get("computed"):
            return stage["seconds"] / stage["computed"]
    return math.nan


def cost_table(samples: pd.DataFrame, metric: str, pair: str = "fidelity") -> pd.DataFrame:
    """Per purifier (transform label): mean quality on protected images and seconds per image."""
    chosen = select_pair(samples, metric, pair)
    if chosen.empty:
        raise BenchError(f"no rows for --metric {metric} --pair {pair}")
    protected = chosen[chosen["defense"].map(base_label) != "none"]
    if not protected.empty:  # a purifier is judged on protected images
        chosen = protected
    rows = []
    for transform, group in chosen.groupby("transform", sort=False):
        costs = [c for c in (_transform_cost(Path(j)) for j in group["job"].unique())
                 if not math.isnan(c)]
        rows.append({"transform": transform, "quality": float(group["value"].mean()),
                     "cost": float(np.median(costs)) if costs else math.nan,
                     "defenses": ", ".join(dict.fromkeys(group["defense"]))})
    return pd.DataFrame(rows)


def purifier_cost(dirs: list, metric: str, out: str | Path, pair: str = "fidelity",
                  where: dict | None = None, formats=("png", "pdf"),
                  strict: bool = False) -> list[Path]:
    samples = filter_rows(load_samples(dirs, strict), where or {})
    table = cost_table(samples, metric, pair)
    defenses = ", ".join(dict.fromkeys(", ".join(table["defenses"]).split(", ")))
    direction = metric_directions(list(samples["job"].unique())).get(metric)
    if direction is not None:
        table = table.sort_values("quality", ascending=not direction)
    y = np.arange(len(table))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 0.5 * len(table) + 1.6), sharey=True)
    left.barh(y, table["quality"], color="tab:blue")
    arrow = "" if direction is None else (" ↑" if direction else " ↓")
    left.set_xlabel(f"{metric}{arrow} on {pair}")
    left.set_yticks(y, table["transform"])
    left.invert_yaxis()
    finite = table["quality"][np.isfinite(table["quality"])]
    if len(finite):  # bars from 0: an axis cut at 0.87 makes small differences look large
        low, high = min(0.0, float(finite.min())), max(0.0, float(finite.max()))
        pad = 0.25 * (high - low) or 1.0
        left.set_xlim(low - pad if low < 0 else 0.0, high + pad)
    for yi, q in zip(y, table["quality"]):
        left.text(q, yi, f" {q:.4f}", va="center", fontsize=8)
    costs = table["cost"]
    known = costs[costs > 0]
    right.barh(y, costs.where(costs > 0, np.nan), color="tab:orange")
    right.set_xlabel("cost: seconds per image (transform stage)")
    if len(known):
        right.set_xscale("log")
        right.set_xlim(known.min() / 3, known.max() * 6)
        right.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        right.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:  # no time known: an axis of ±0.04 seconds would be made up
        right.set_xticks([])
    at_left = blended_transform_factory(right.transAxes, right.transData)
    for yi, (name, c) in enumerate(zip(table["transform"], costs)):
        if c > 0:
            right.text(c, yi, f" {c:.3g} s", va="center", fontsize=8)
        else:
            words = "no-op" if base_label(name) == "identity" else "not measured (all cached)"
            right.text(0.02, yi, words, va="center", fontsize=8, transform=at_left)
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"purification quality vs cost (protected images of: {defenses})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out, formats, "purifier_cost")


def _cache_root(job: Path, cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    from benchmark.paths import default_cache_dir

    configured = job_config(job).get("cache_dir")
    return Path(configured).expanduser() if configured and "${" not in str(configured) \
        else default_cache_dir()


def _grid_labels(dirs: list, rows: str, where: dict, strict: bool) -> pd.DataFrame:
    """The labels (and `job`) of the jobs to draw: one per row, at one value of the other."""
    jobs = []
    for job in finished_jobs(dirs, strict):
        labels = _stats(job).get("labels") or {}
        if (job / "images.csv").is_file() and labels:
            jobs.append({**labels, "job": job})
    if not jobs:
        raise BenchError("no job with images.csv under these directories (jobs run before "
                         "images.csv existed: re-run them, the job cache makes it instant)")
    labels = filter_rows(pd.DataFrame(jobs), where)
    fixed = "transform" if rows == "defense" else "defense"
    if labels[fixed].nunique() > 1 and not where.get(fixed):
        options = list(dict.fromkeys(labels[fixed]))
        default = next((o for o in options if base_label(o) not in ("identity", "none")), options[0])
        labels = labels[labels[fixed] == default]
    for other in ("dataset", "generator"):
        if labels[other].nunique() > 1:
            raise BenchError(f"several {other}s: choose one with --where {other}=...")
    if labels.empty:
        raise BenchError("no job matches --where")
    return labels.drop_duplicates(rows)


# The files of a cached image, newest format first: benchmark.cache.ArtifactCache.IMAGE (raw
# uint8 HWC .npy) and .PNG (caches before issue 26); named here so that results stays torch-free
CACHED_IMAGE_FILES = (".rgb.npy", ".png")


def _cached_image_file(folder: Path, key: str) -> Path | None:
    """The file of a cached image in whichever format the cache holds it; None if neither."""
    return next((folder / f"{key}{ext}" for ext in CACHED_IMAGE_FILES
                 if (folder / f"{key}{ext}").is_file()), None)


def _decode_cached(path: Path, data: bytes) -> np.ndarray:
    if path.name.endswith(".npy"):
        a = np.load(io.BytesIO(data), allow_pickle=False)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"an array of shape {a.shape} and dtype {a.dtype}, not 8-bit RGB")
        return a
    from PIL import Image

    with Image.open(io.BytesIO(data)) as f:
        return np.asarray(f.convert("RGB"))


def _cached_image(path: Path | None, unreadable: list[str]) -> np.ndarray | str:
    """The image at `path`, or what to write in its place."""
    if path is None or not path.is_file():
        return REMOVED
    try:
        data = path.read_bytes()
        expected = _recorded_sha256(path)
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError("its sha256 does not match its sidecar's")
        return _decode_cached(path, data)
    # Pillow: not an image, truncated, broken; NumPy: not an array (EOFError: empty)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        unreadable.append(f"{path} ({e})")
        return UNREADABLE


def _recorded_sha256(path: Path) -> str | None:
    """The checksum the cache's sidecar records for an entry (caches before checksums: none);
    a damaged image that still decodes must not be drawn as if it were the job's."""
    try:
        sidecar = json.loads(path.with_name(f"{path.name.split('.')[0]}.json").read_text())
    except (OSError, ValueError):
        return None
    payload = sidecar.get("payload") if isinstance(sidecar, dict) else None
    return payload.get("sha256") if isinstance(payload, dict) else None


def _job_tiles(job: Path, root: Path, n: int, unreadable: list[str]) -> list[tuple[str, dict]]:
    """Per image (the first `n`): {grid column: its image, or what to write in its place}."""
    table = read_csv_file(job / "images.csv", ["image_id", "image", "stage", "key"],
                          dtype=str)
    if "generator" in table and table["generator"].nunique() > 1:  # target=all: the first
        table = table[table["generator"] == table["generator"].dropna().iloc[0]]
    tiles = []
    for image_id in list(dict.fromkeys(table["image_id"]))[:n]:
        mine = table[table["image_id"] == image_id].drop_duplicates("image").set_index("image")
        cells = {name: _cached_image(_cached_image_file(
                         root / mine.loc[name, "stage"] / mine.loc[name, "key"][:2],
                         mine.loc[name, "key"]), unreadable)
                 if name in mine.index else NOT_MADE for name, _ in GRID_COLUMNS}
        tiles.append((image_id, cells))
    if all(c is REMOVED or c is NOT_MADE for _, cells in tiles for c in cells.values()):
        raise BenchError(f"{job}: its images are not in the cache at {root} (pass --cache-dir "
                         "if the cache moved; `bench cache clear` removes them)")
    return tiles


def _draw_grid(tiles: list[tuple[str, dict]], title: str):
    """The columns that some job made, a row per tile; a cell without an image says why."""
    columns = [(name, words) for name, words in GRID_COLUMNS
               if any(cells[name] is not NOT_MADE for _, cells in tiles)]
    size = 1.7
    fig, axes = plt.subplots(len(tiles), len(columns), squeeze=False,
                             figsize=(size * len(columns) + 0.8, size * len(tiles) + 0.6))
    for r, (name, cells) in enumerate(tiles):
        for c, (column, words) in enumerate(columns):
            ax, img = axes[r][c], cells[column]
            ax.set_xticks([])
            ax.set_yticks([])
            if isinstance(img, str):
                ax.set_facecolor("0.85")
                ax.text(0.5, 0.5, img, ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
            else:
                ax.imshow(img, interpolation="nearest")
            if r == 0:
                ax.set_title(words, fontsize=9)
        axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    height = fig.get_size_inches()[1]
    fig.suptitle(title, fontsize=10, y=1 + 0.15 / height, va="bottom")
    return fig


def qualitative_grid(dirs: list, out: str | Path, n: int = 3, rows: str = "defense",
                     where: dict | None = None, cache_dir: str | None = None,
                     strict: bool = False) -> Path:
    """One PNG: per row a job (a defense at one transform, or a transform for one defense)."""
    if rows not in ("defense", "transform"):
        raise BenchError(f"--rows {rows}: expected defense or transform")
    if n < 1:
        raise BenchError(f"--n {n}: expected an integer >= 1")
    labels = _grid_labels(dirs, rows, where or {}, strict)
    tiles, broken, unreadable = [], [], []
    for _, row in labels.iterrows():
        job = Path(row["job"])
        try:
            found = _job_tiles(job, _cache_root(job, cache_dir), n, unreadable)
        except BenchError as e:
            broken.append(str(e))
            continue
        tiles += [(f"{row[rows]}\n{image_id}", cells) for image_id, cells in found]
    leave_out(broken, "job(s) without images to draw", strict, bool(tiles))
    leave_out(unreadable, "cached image(s) that cannot be read, drawn as 'unreadable in the "
              "cache'", strict, True)
    fixed = "transform" if rows == "defense" else "defense"
    title = f"{fixed} = {labels[fixed].iloc[0]}, generator = {labels['generator'].iloc[0]}"
    return _save(_draw_grid(tiles, title), out, ("png",), "grid")[0]
