"""`bench report`: one static HTML page of a sweep that opens from disk (no server, network or
CDN): the robustness leaderboard, every table (sortable), the curves, image grids whose
thumbnails enlarge on click, and each job's labels, notices and provenance.

Everything is made by the commands it stands for (`bench score`, `bench table`, `bench plot
curves`, `bench grid`), so the page shows the same numbers; a section that cannot be made
from these results (no edits: no score; no strength grid: no curves) says why.
"""

import html
import io
import json
from pathlib import Path

import pandas as pd

from benchmark.errors import BenchError
from benchmark.results.reading import load_samples, metric_directions
from benchmark.results.robustness import score_table
from benchmark.results.tables import make_table, write_output

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th.sorted-up::after { content: " \\25B2"; } th.sorted-down::after { content: " \\25BC"; }
td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.9em; } .missing { color: #a33; }
img.thumb { max-width: 22em; border: 1px solid #ccc; cursor: zoom-in; margin: 0.3em; }
#zoom { display: none; position: fixed; inset: 0; background: rgba(0,0,0,0.85);
        align-items: center; justify-content: center; cursor: zoom-out; }
#zoom img { max-width: 95vw; max-height: 95vh; }
details { margin: 0.3em 0; } pre { font-size: 0.8em; background: #f7f7f7; padding: 0.5em; }
"""
SCRIPT = """
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const i = Array.from(th.parentNode.children).indexOf(th);
  const up = !th.classList.contains('sorted-up');
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-up', 'sorted-down'));
  th.classList.add(up ? 'sorted-up' : 'sorted-down');
  const key = r => { const t = r.children[i].textContent.trim(), n = parseFloat(t);
                     return isNaN(n) ? t : n; };
  Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
  }).forEach(r => body.appendChild(r));
}
document.querySelectorAll('table.sortable th').forEach(th => th.onclick = () => sortBy(th));
const zoom = document.getElementById('zoom');
document.querySelectorAll('img.thumb').forEach(img => img.onclick = () => {
  const big = new Image(); big.src = img.src; big.alt = img.alt;
  zoom.replaceChildren(big); zoom.style.display = 'flex'; });
zoom.onclick = () => { zoom.style.display = 'none'; };
"""


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, classes="sortable", border=0, na_rep="",
                         float_format=lambda v: f"{v:.4g}")


def _note(text: str, missing: bool = False) -> str:
    return f'<p class="{"note missing" if missing else "note"}">{html.escape(text)}</p>'


def _leaderboard(samples: pd.DataFrame, directions: dict, seed: int) -> str:
    parts = []
    for metric in sorted(samples["metric"].unique()):
        try:
            text = score_table(samples, metric, directions.get(metric), "csv", seed)
        except BenchError as e:
            parts.append(_note(f"{metric}: no score ({e})", missing=True))
            continue
        frame = pd.read_csv(io.StringIO(text))
        parts.append(f"<h3>{html.escape(metric)}</h3>" + _table_html(frame))
    return "".join(parts)


def _tables(samples: pd.DataFrame, directions: dict, seed: int) -> str:
    parts = []
    combos = samples[["metric", "pair"]].drop_duplicates().sort_values(["pair", "metric"])
    for metric, pair in combos.itertuples(index=False):
        try:
            text = make_table(samples, "defense", "transform", metric, pair, "mean", "csv",
                              directions, seed)
        except BenchError as e:
            parts.append(_note(f"{metric} on {pair}: {e}", missing=True))
            continue
        arrow = {True: " ↑", False: " ↓"}.get(directions.get(metric), "")
        parts.append(f"<h3>{html.escape(metric)}{arrow} on {html.escape(pair)}</h3>"
                     + _table_html(pd.read_csv(io.StringIO(text))))
    return "".join(parts)


def _figures(dirs: list, samples: pd.DataFrame, out: Path, cache_dir: str | None) -> str:
    from benchmark.results.plots import qualitative_grid, robustness_curves

    figures, parts = out / "figures", []
    for metric, pair in samples[["metric", "pair"]].drop_duplicates().itertuples(index=False):
        try:
            (png,) = robustness_curves(dirs, metric, pair, figures / f"curves_{metric}_{pair}",
                                       formats=("png",))
        except BenchError as e:
            parts.append(_note(f"curves of {metric} on {pair}: {e}", missing=True))
            continue
        parts.append(_image(png, out, f"{metric} on {pair}"))
    for rows in ("defense", "transform"):
        try:
            png = qualitative_grid(dirs, figures / f"grid_{rows}.png", rows=rows,
                                   cache_dir=cache_dir)
        except BenchError as e:
            parts.append(_note(f"image grid by {rows}: {e}", missing=True))
            continue
        parts.append(_image(png, out, f"images by {rows}"))
    return "".join(parts)


def _image(path: Path, out: Path, title: str) -> str:
    src = html.escape(path.relative_to(out).as_posix())
    return (f'<figure><img class="thumb" src="{src}" alt="{html.escape(title)}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _jobs(samples: pd.DataFrame) -> str:
    parts = []
    for job in samples["job"].unique():
        try:
            stats = json.loads((Path(job) / "stats.json").read_text())
        except (OSError, ValueError):
            stats = {}
        labels = stats.get("labels") or {}
        title = " x ".join(str(labels.get(k, "?")) for k in
                           ("dataset", "defense", "transform", "generator"))
        notices = [n for n in [stats.get("notice"), *stats.get("notices", [])] if n]
        body = "".join(_note(f"NOTE: {n}") for n in notices)
        provenance = stats.get("provenance")
        if provenance:
            body += "<pre>" + html.escape(json.dumps(provenance, indent=1)) + "</pre>"
        parts.append(f"<details><summary>{html.escape(title)} "
                     f"<span class='note'>{html.escape(str(job))}</span></summary>{body}"
                     f"</details>")
    return "".join(parts)


def write_report(dirs: list, out: str | Path, seed: int = 0, cache_dir: str | None = None,
                 strict: bool = False) -> Path:
    """The report of the finished jobs under `dirs`, as `out`/index.html (+ figures/)."""
    out = Path(out)
    samples = load_samples(dirs, strict)
    directions = metric_directions(list(samples["job"].unique()))
    sections = [("Robustness leaderboard", _leaderboard(samples, directions, seed)),
                ("Tables (mean over images; click a header to sort)",
                 _tables(samples, directions, seed)),
                ("Figures (click to enlarge)", _figures(dirs, samples, out, cache_dir)),
                (f"Jobs ({samples['job'].nunique()})", _jobs(samples))]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>bench report</title><style>{STYLE}</style></head><body>"
            f"<h1>bench report: {html.escape(', '.join(map(str, dirs)))}</h1>{body}"
            f"<div id='zoom'></div><script>{SCRIPT}</script>"
            f"</body></html>")
    return write_output(out / "index.html", lambda p: p.write_text(page))
