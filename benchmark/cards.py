"""Cards: what a component's config says about where its defaults come from.

A component's YAML may hold one `_card_` block (the model: RobustBench's model_info cards):
the paper, its authors, year, venue, arXiv id, the reference code (repository and commit
where known), the reference precision, and per default the reference's own value, its units
and the source line it comes from. The YAML value next to the card is the one home of each
default; the card states what the reference wrote and a test converts it
(`converted`: x 127.5 for [-1, 1] units, x 255 for [0, 1]) and compares. A value that differs
from the reference on purpose says so with `here` (what bench runs) and `why`.

    _card_:
      paper: "Adversarial Example Does Good: ..."
      authors: Liang, Wu, Hua, ...
      year: 2023
      venue: ICML 2023
      arxiv: "2302.04578"
      code: xavihart/Diff-Protect
      commit: null                      # where known
      attacks: SD v1.4 UNet + VAE       # the docs' table
      objective: max denoising loss, t ~ U
      precision: fp32                   # the reference's (the class's reference_precision)
      reference:                        # key: the reference's value, its units and source
        eps: {value: 16, units: /255, source: "configs/attack/base.yaml epsilon"}
      variant: {}                       # keys where this config leaves the class's defaults, why
      deviations: []                    # what bench does differently on purpose

The card is documentation: `benchmark.build` strips it before a component is built and
before a config enters a cache key (`without_cards`), so editing a card's prose never
invalidates a cache. This module reads cards from the YAML files themselves (no Hydra, no
torch), for `bench ls` and the documentation's tables.
"""

from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

CARD_KEY = "_card_"

# How many pixel units out of 255 one unit of the reference's scale is.
UNITS = {
    "[-1,1]": 127.5,       # images in [-1, 1]: 2 units span 255
    "[0,1]": 255.0,        # images in [0, 1]
    "/255": 1.0,           # already pixel units out of 255 (0-255 images)
    "%": 0.01,             # a percentage of the iterations, as a fraction
    "Lab a/b /110": 1.0,   # Anti-Forgery's scaled a/b channels: not pixel units, kept as written
}
NORMS = {"l2": "L2", "linf": "L∞", None: "L∞"}


def without_cards(config: Any) -> Any:
    """A plain config without any `_card_` block, at any depth."""
    if isinstance(config, dict):
        return {k: without_cards(v) for k, v in config.items() if k != CARD_KEY}
    if isinstance(config, (list, tuple)):
        return [without_cards(v) for v in config]
    return config


def number(value: Any) -> Any:
    """A card value as written: a number, or a fraction written `16/255`."""
    if isinstance(value, str) and "/" in value:
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            return value
    return value


def converted(entry: dict) -> Any:
    """What bench's YAML must hold for a card's reference entry: `here` when bench differs on
    purpose, else the reference's value in pixel units out of 255 (or as written: counts,
    weights, names)."""
    if "here" in entry:
        return entry["here"]
    value = number(entry.get("value"))
    units = entry.get("units")
    if units is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r}; known: {', '.join(UNITS)}")
    return value * UNITS[units]


def merge(base: dict, over: dict) -> dict:
    """Hydra's merge of two plain configs: dicts merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read(path: Path) -> dict:
    """A config file's own values merged over those of the files of its group it extends
    (its `defaults` entries that name a sibling file), as Hydra composes them at the full
    scale; other groups' entries (an editor, a scale variant) are left out."""
    path = Path(path)
    node = yaml.safe_load(path.read_text()) or {}
    merged: dict = {}
    own = {k: v for k, v in node.items() if k != "defaults"}
    seen_self = False
    for entry in node.get("defaults", []) or []:
        if entry == "_self_":
            merged, seen_self = merge(merged, own), True
        elif isinstance(entry, str) and not entry.startswith("/"):
            parent = path.parent / f"{entry}.yaml"
            if parent.is_file():
                merged = merge(merged, read(parent))
    return merged if seen_self else merge(merged, own)


def card(path: Path) -> dict:
    return read(path).get(CARD_KEY) or {}


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _reference_text(entry: dict | None) -> str:
    """'0.06 in [-1,1]' for a reference entry in other units than bench's, else ''."""
    if not entry or "here" in entry or entry.get("units") in (None, "/255", "%"):
        return ""
    if UNITS.get(entry["units"]) == 1.0:
        return f"on {entry['units']}"  # held as written: not pixel units
    return f"{entry['value']} in {entry['units']}"


def budget_cells(values: dict) -> dict[str, str]:
    """The budget, step and iterations of a defense's values, with the reference's units."""
    ref = (values.get(CARD_KEY) or {}).get("reference") or {}
    cells = {}
    if "eps" in values:
        eps = values["eps"]
        original = _reference_text(ref.get("eps"))
        cells["budget"] = ("none" if eps is None else
                           f"{NORMS.get(values.get('norm'), values.get('norm'))} "
                           f"{_number_text(eps)}" + (f" ({original})" if original else ""))
    if "lr" in values:
        cells["step"] = f"Adam lr {_number_text(values['lr'])}"
    elif "step" in values:
        original = _reference_text(ref.get("step"))
        step = _number_text(values["step"]) + (f" ({original})" if original else "")
        if values.get("schedule", "constant") != "constant" or values.get("final_step_fraction"):
            fraction = values.get("final_step_fraction")
            step += f" → {Fraction(fraction).limit_denominator(10000)} " if fraction else " "
            step += values.get("schedule", "linear")
        cells["step"] = step
    if "iterations" in values:
        reps = values.get("grad_samples") or 1
        cells["iterations"] = _number_text(values["iterations"]) + (
            f" × {reps} grad reps" if reps > 1 else "")
    return cells


def summary(path: Path, description: str) -> str:
    """`bench ls`'s line for a config: its description, then its budget from the YAML values
    (with the reference's units where they differ from bench's)."""
    values = read(path)
    if CARD_KEY not in values:
        return description
    cells = budget_cells(values)
    parts = []
    if "budget" in cells:
        parts.append("no budget" if cells["budget"] == "none" else f"eps {cells['budget']}")
    if "step" in cells:
        parts.append(cells["step"] if cells["step"].startswith("Adam") else f"step {cells['step']}")
    if "iterations" in cells:
        iterations, _, reps = cells["iterations"].partition(" × ")
        parts.append(f"{iterations} iterations" + (f" × {reps}" if reps else ""))
    return "; ".join([description, ", ".join(parts)]) if parts else description


def citation(info: dict) -> str:
    authors = str(info.get("authors", "")).split(",")[0].strip()
    if authors and "," in str(info.get("authors", "")):
        authors += " et al."
    return " ".join(x for x in (authors, str(info.get("venue") or info.get("year") or ""))
                    if x)


def table(group_dir: Path) -> str:
    """The defaults table of a config group's cards (docs/defenses.md): one row per config
    with a card that names a paper, its values from the YAML, the reference's from the card."""
    rows = [("| defense | paper | code | attacks | budget | step | iterations | objective "
             "| reference precision |"), "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(Path(group_dir).glob("*.yaml")):
        values = read(path)
        info = values.get(CARD_KEY) or {}
        if not info.get("paper"):
            continue
        cells = budget_cells(values)
        arxiv = f" [arXiv:{info['arxiv']}](https://arxiv.org/abs/{info['arxiv']})" \
            if info.get("arxiv") else ""
        code = f"[{info['code']}](https://github.com/{info['code']})" if info.get("code") else ""
        if code and info.get("commit"):
            code += f" @ `{str(info['commit'])[:7]}`"
        row = [f"`{path.stem}`", citation(info) + arxiv, code, info.get("attacks", ""),
               cells.get("budget", ""), cells.get("step", ""), cells.get("iterations", ""),
               info.get("objective", ""), info.get("precision", "")]
        rows.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(rows)


def sources(group_dir: Path) -> str:
    """Per config with a card: every reference value, its units, what bench holds and the
    source it comes from, then the deliberate deviations (docs/defenses.md)."""
    out = []
    for path in sorted(Path(group_dir).glob("*.yaml")):
        values = read(path)
        info = values.get(CARD_KEY) or {}
        reference = info.get("reference") or {}
        if not reference and not info.get("deviations"):
            continue
        out.append(f"### `{path.stem}`\n")
        if info.get("paper"):
            out.append(f"{info.get('authors', '')}. \"{info['paper']}.\" {info.get('venue', '')}"
                       f"{'. arXiv:' + str(info['arxiv']) if info.get('arxiv') else ''}.\n")
        if reference:
            out += ["| key | bench | reference | units | source |", "|---|---|---|---|---|"]
            for key, entry in reference.items():
                held = values.get(key)
                note = f" ({entry['why']})" if entry.get("why") else ""
                cells = [f"`{key}`", f"`{held}`", f"{entry.get('value')}{note}",
                         entry.get("units", ""), entry.get("source", "")]
                out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
            out.append("")
        for key, why in (info.get("variant") or {}).items():
            out.append(f"- `{key}: {values.get(key)}` (this config's choice): {why}")
        for deviation in info.get("deviations") or []:
            out.append(f"- Deviation: {deviation}")
        out.append("")
    return "\n".join(out)
