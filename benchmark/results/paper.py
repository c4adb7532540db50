"""Our numbers beside the study's (`bench table --vs results/paper_reported.csv`)."""

from pathlib import Path

import pandas as pd

from benchmark.errors import BenchError
from benchmark.results.reading import read_csv_file
from benchmark.results.tables import FORMATS, Cell, filter_rows, latex, number, tex
from benchmark.schema import base_label

REPORTED_COLUMNS = ["table", "setting", "dataset", "defense", "transform", "generator", "pair",
                    "metric", "value", "paper_name", "source"]


def _matches(labels: pd.Series, wanted: str) -> pd.Series:
    """`advdm` matches advdm with any parameters; `advdm(direction=-)` only that label."""
    return labels == wanted if "(" in wanted else labels.map(base_label) == wanted


def _not_built(ref: pd.Series) -> list[str]:
    """The config files a reported setting needs that this checkout lacks (group/name.yaml):
    a defense, transform or generator that nobody has added yet. Read from the config
    groups, so that a row turns from `not built` to `not run` when its yaml file appears."""
    from benchmark.paths import config_dir

    root = config_dir()
    needed = [("defense", ref.get("defense", "")), ("transform", ref.get("transform", "")),
              ("generator", ref.get("generator", ""))]
    return [f"{group}/{base_label(name)}.yaml" for group, name in needed
            if name and name != "*" and not (root / group / f"{base_label(name)}.yaml").is_file()]


def compare_reported(samples: pd.DataFrame, reported: str | Path, metrics: list[str] | str,
                     pair: str, fmt: str = "md", agg: str = "mean", seed: int = 0,
                     where: dict[str, list[str]] | None = None) -> str:
    """Each number the study reports for these metrics/pair, ours beside it, and ours - theirs."""
    metrics = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    if fmt not in FORMATS:
        raise BenchError(f"--format {fmt}: expected one of {FORMATS}")
    paper = read_csv_file(Path(reported), ["defense", "transform", "pair", "metric", "value"],
                          f"--vs {reported}", numeric=("value",), dtype=str,
                          keep_default_na=False)
    paper = paper[paper["metric"].isin(metrics) & (paper["pair"] == pair)]
    if paper.empty:
        raise BenchError(f"--vs {reported}: the study reports nothing for --metric "
                         f"{','.join(metrics)} --pair {pair}")
    samples = filter_rows(samples, where or {})
    out = []
    for _, ref in paper.iterrows():
        mine = samples[(samples["metric"] == ref["metric"]) & (samples["pair"] == pair)]
        pooled = ref["defense"] == "*"  # the study names no defense: all protected images
        if pooled:
            mine = mine[mine["defense"].map(base_label) != "none"]
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
            c = Cell(group["value"].to_numpy(dtype=float), (group["image_id"] == "*").all(),
                      agg, seed)
            out.append({**base, "ours (label)": f"{defense} × {transform}",
                        "ours": c.text(False, fmt),
                        "ours − paper": f"{c.mean - base['paper']:+.4f}"})
    table = pd.DataFrame(out)
    table["paper"] = table["paper"].map(number)
    table = table[["defense", "metric", "ours (label)", "ours", "paper", "ours − paper", "table",
                   "setting"]]
    caption = (f"{', '.join(metrics)} on pair {pair}: ours ({agg}) beside the study's reported "
               f"value ({Path(reported).name})")
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "md":
        return f"{caption}\n\n" + table.to_markdown(index=False, disable_numparse=True) + "\n"
    header = [("", c) for c in table.columns[1:]]
    return latex(caption, table.columns[0], list(table.iloc[:, 0]), header,
                  [[tex(v) for v in row[1:]] for row in table.itertuples(index=False)], False)
