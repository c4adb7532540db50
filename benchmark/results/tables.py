"""Paper-style tables (`bench table`): rows x columns of one pair for one or more metrics.

A cell aggregates the per-image values with `mean`, `std` (mean ± std), `ci` (mean
and a seeded percentile-bootstrap 95% interval of the mean) or `worst` (adds, per
row, the per-image worst case over the columns: for each image the column most
favourable to the editor, as BlurGuard (Kim et al. 2025) reports robustness over a
set of reversal techniques). The pseudo-pair `drop` is, per image, the value on
`protection` minus the value on `edit`: how far the transformation moved the edit
away from the protected edit.

Below a Markdown or LaTeX table, a footnote says what made its cells (`with_provenance`):
bench's version and commit, Python, torch, diffusers, transformers, numpy, kornia, Pillow with
its libjpeg, the device and the weights, as the jobs' stats.json record them; a table that
mixes bench versions, weights or libjpeg builds gets one warning.
"""

import io
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import BenchError, first_few
from benchmark.provenance import CORE_PACKAGES, bench_text, flat, identity_text
from benchmark.schema import DERIVED_PAIRS, LABEL_COLUMNS, ROW_COLUMNS

log = logging.getLogger(__name__)

FORMATS = ("csv", "md", "latex")
AGGREGATES = ("mean", "std", "ci", "worst")


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


def number(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    text = f"{v:.4f}"
    return "0.0000" if text == "-0.0000" else text


def select_pair(samples: pd.DataFrame, metric: str, pair: str) -> pd.DataFrame:
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


class Cell:
    def __init__(self, values: np.ndarray, set_level: bool, agg: str, seed: int):
        with np.errstate(invalid="ignore"):
            self.mean = float(np.mean(values)) if len(values) else math.nan
        self.spread = ""
        if set_level or len(values) < 2 or agg in ("mean", "worst"):
            return
        if not np.isfinite(values).all():
            return  # e.g. PSNR of identical images (inf): no spread to speak of
        if agg == "std":
            self.spread = f" ± {number(float(np.std(values, ddof=1)))}"
        else:
            low, high = bootstrap_ci(values, seed)
            self.spread = f" [{number(low)}, {number(high)}]"

    def text(self, bold: bool, fmt: str) -> str:
        body = number(self.mean) + self.spread
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


def _check_present(samples: pd.DataFrame, column: str, values: list[str], negate: bool) -> None:
    """A value that no row has is a typo or the wrong results: KEY=V would keep nothing."""
    present = sorted(samples[column].astype(str).unique())
    absent = [v for v in values if v not in present]
    if not absent:
        return
    message = (f"--where {column}{'!' if negate else ''}={','.join(absent)}: no row has "
               f"{column} {', '.join(absent)}; the results hold {column} "
               f"{first_few(present, limit=12)}")
    if not negate:
        raise BenchError(message)
    log.warning("%s (nothing to drop)", message)


def filter_rows(samples: pd.DataFrame, where: dict[str, list[str]],
                check: bool = True) -> pd.DataFrame:
    """Keep rows whose column is one of the values; a key ending in `!` (KEY!=V) drops them.
    `check`: refuse (or for KEY!=V, warn about) a value that no row has."""
    given = samples
    for key, values in where.items():
        column, negate = key.rstrip("!"), key.endswith("!")
        if column not in samples.columns:
            raise BenchError(f"--where {column}: not a column; choose from {LABEL_COLUMNS}")
        if check:
            _check_present(given, column, values, negate)
        keep = samples[column].astype(str).isin(values)
        samples = samples[~keep if negate else keep]
    return samples


def write_output(path: str | Path, write: Callable[[Path], object]) -> Path:
    """`write(path)` into a folder made for it; a folder that is a file, or a place that cannot
    be written, is a BenchError naming the path (`-o`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in path.parents if p.is_file()), path.parent)
        raise BenchError(f"-o {path}: {blocking} is a file, not a folder") from None
    except OSError as e:
        raise BenchError(f"-o {path}: cannot write it ({e.strerror or e})") from None
    return path


def _arrow(direction: bool | None, fmt: str) -> str:
    if direction is None:
        return ""
    if fmt == "latex":
        return " $\\uparrow$" if direction else " $\\downarrow$"
    return " ↑" if direction else " ↓"


def _report_empty(samples: pd.DataFrame, empty: list[str], pair: str, any_left: bool) -> None:
    """The metrics without rows: left out of a table of the others, or (none left) an error."""
    if not empty:
        return
    held = ", ".join(f"{m}/{p}" for m, p in samples.groupby(["metric", "pair"]).size().index)
    held = held or "no rows (after --where)"
    message = f"no rows for --metric {', '.join(empty)} --pair {pair}"
    if not any_left:
        raise BenchError(f"{message}; the results hold {held}")
    log.warning("%s, left out of the table; the results hold %s", message, held)


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
    samples = filter_rows(samples, where or {})
    blocks = []  # (metric, column keys, {(row, col): Cell}, direction)
    row_keys: list = []
    empty = []
    for name in metrics:
        chosen = select_pair(samples, name, pair)
        if chosen.empty:
            empty.append(name)
            continue
        _check_single_valued(chosen, [rows, cols])
        direction = directions.get(name)
        cells = {}
        for (r, c), group in chosen.groupby([rows, cols], sort=False):
            set_level = (group["image_id"] == "*").all()
            cells[(r, c)] = Cell(group["value"].to_numpy(dtype=float), set_level, agg, seed)
        col_keys = list(dict.fromkeys(chosen[cols]))
        if agg == "worst":
            up = _editor_best(direction, pair)
            for r, group in chosen.groupby(rows, sort=False):
                values, set_level = _worst(group, cols, up)
                cells[(r, "worst case")] = Cell(values, set_level, "mean", seed)
            col_keys.append("worst case")
        row_keys += [r for r in dict.fromkeys(chosen[rows]) if r not in row_keys]
        blocks.append((name, col_keys, cells, direction))
    _report_empty(samples, empty, pair, bool(blocks))

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
                bold |= {(name, r, c) for r, v in column if number(v) == number(best)}

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
    return latex(caption, rows, row_keys, header, body, len(blocks) > 1)


def tex(text) -> str:
    out = str(text)
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                 ("#", "\\#"), ("{", "\\{"), ("}", "\\}"), ("±", "$\\pm$"), ("−", "$-$"),
                 ("×", "$\\times$"),
                 ("~", "\\textasciitilde{}"), ("^", "\\textasciicircum{}")):
        out = out.replace(a, b)
    return out.replace("\\textbackslash\\{\\}", "\\textbackslash{}")


def latex(caption: str, rows: str, row_keys: list, header: list[tuple[str, str]],
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
    lines.append(" & ".join([tex(rows)] + [tex(c) for _, c in header]) + " \\\\")
    lines.append("\\midrule")
    for r, values in zip(row_keys, body):
        lines.append(" & ".join([tex(r)] + [v.replace("±", "$\\pm$") for v in values]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _caption_tex(text: str) -> str:
    """Escape a caption that may already hold the $\\uparrow$/$\\downarrow$ arrows."""
    parts = text.split("$")
    return "$".join(p if i % 2 else tex(p) for i, p in enumerate(parts))


# -- provenance -----------------------------------------------------------------------------------


def table_jobs(samples: pd.DataFrame, metric: str | list[str], pair: str,
               where: dict[str, list[str]] | None = None) -> list[str]:
    """The jobs whose rows a table of these metrics on this pair reads."""
    metrics = metric.split(",") if isinstance(metric, str) else list(metric)
    kept = filter_rows(samples, where or {}, check=False)
    pairs = DERIVED_PAIRS.get(pair, (pair,))
    chosen = kept[kept["metric"].isin(metrics) & kept["pair"].isin(pairs)]
    return list(dict.fromkeys(chosen["job"])) if "job" in chosen.columns else []


def _facts(record: dict) -> dict[str, str]:
    """What a footnote says of one provenance record."""
    row = flat(record)
    gpu = f" (CUDA {row['cuda']}, cuDNN {row['cudnn']})" if row["cuda"] else ""
    return {"bench": bench_text(record), "Python": str(row["python"]),
            **{name: str(row[name]) for name in CORE_PACKAGES if name != "Pillow"},
            "Pillow": f"{row['Pillow']} ({row['libjpeg']})", "device": f"{row['device']}{gpu}"}


def _libjpeg(record: dict) -> str:
    codecs = record.get("codecs") if isinstance(record.get("codecs"), dict) else {}
    return f"Pillow {codecs.get('libjpeg')}, OpenCV {codecs.get('opencv_libjpeg')}"


def _models(record: dict) -> dict[str, str]:
    """model name -> its identity text, for every model the record names."""
    named = record.get("weights") if isinstance(record.get("weights"), dict) else {}
    return {str(identity.get("model")): identity_text(identity) for identity in named.values()
            if isinstance(identity, dict)}


def _distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def provenance_note(records: list[dict | None], sep: str = " · ") -> str:
    """One line: the versions, device and weights that made the cells (several values of a
    fact joined by ' / ')."""
    known = [r for r in records if isinstance(r, dict)]
    facts = [_facts(r) for r in known]
    parts = [f"{name} {' / '.join(_distinct(f[name] for f in facts))}" for name in
             (facts[0] if facts else {})]
    if known:
        models = sorted({text for r in known for text in _models(r).values()})
        parts.append(f"weights {', '.join(models) if models else 'none named'}")
    unknown = len(records) - len(known)
    if unknown:
        parts.append(f"{unknown} result(s) without a record (made by a bench before provenance)")
    return "Provenance: " + sep.join(parts)


def provenance_mixes(records: list[dict | None]) -> list[str]:
    """What a table reading these records mixes: bench versions, libjpeg builds, weights of
    one model, results without a record beside results with one."""
    known = [r for r in records if isinstance(r, dict)]
    mixes = []
    for what, values in (("bench versions", [bench_text(r) for r in known]),
                         ("libjpeg builds", [_libjpeg(r) for r in known])):
        if len(_distinct(values)) > 1:
            mixes.append(f"results of different {what} ({' / '.join(_distinct(values))})")
    identities: dict[str, list[str]] = {}
    for r in known:
        for model, text in _models(r).items():
            identities.setdefault(model, []).append(text)
    mixes += [f"different weights of {model} ({' / '.join(_distinct(texts))})"
              for model, texts in identities.items() if len(_distinct(texts)) > 1]
    if known and len(known) < len(records):
        mixes.append(f"results with and without a provenance record "
                     f"({len(records) - len(known)} without)")
    return mixes


def with_provenance(text: str, fmt: str, records: list[dict | None]) -> str:
    """`text`, a table, with its provenance footnote (Markdown, LaTeX; CSV stays plain), after
    one warning when its records mix bench versions, weights or libjpeg builds."""
    mixes = provenance_mixes(records)
    if mixes:
        log.warning("this table mixes %s; its provenance footnote (Markdown, LaTeX) lists "
                    "them", "; ".join(mixes))
    if fmt == "csv" or not records:
        return text
    if fmt == "md":
        return f"{text}\n{provenance_note(records)}\n"
    head, end, tail = text.rpartition("\\end{table}")
    note = tex(provenance_note(records, "; "))
    return f"{head}\\par\\smallskip{{\\footnotesize {note}}}\n{end}{tail}"


def read_table_text(text: str) -> pd.DataFrame:
    """A csv table back as a frame (used by tests and scripts)."""
    return pd.read_csv(io.StringIO(text), index_col=0)
