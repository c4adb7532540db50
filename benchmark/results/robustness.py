"""How much of a defense's protection survives a transformation family: retention and score.

For a defense d, a transformation family f swept over strengths s, and a similarity metric m
on edits (per image):

    effect(s) = m(control) - m(edit)         what d still changes in the edit beyond what T
                                             alone changes (sign flipped for a metric where
                                             lower is better)
    effect(0) = best - m(protection)         the protection with no transformation; `best`
                                             is m of an edit against itself, read from the
                                             results (the control pair of transform=identity,
                                             or the protection pair of defense=none)
    rho(s)    = effect(s) / effect(0)        per image, then averaged (seeded bootstrap 95 %)

The score of (d, f) is the area under rho over the family's strengths mapped to [0, 1], with
rho(0) = 1 at strength 0; the **breaking point** is the weakest swept strength at which the
mean rho falls below 0.5, with the fidelity PSNR/SSIM of T(x_adv) vs x there. Strengths: a
sweep over `transform.strength` is already on WAVES's [0, 1] scale (each transform's docstring
states the native range it maps); a sweep over a native parameter (`quality`, `factor`, ...)
is mapped linearly from its mildest to its strongest swept value, and the output says so.
Images whose protection changes nothing (effect(0) <= 0) have no retention and are counted.
"""

import json
import math

import numpy as np
import pandas as pd

from benchmark.errors import BenchError
from benchmark.results.reading import job_config
from benchmark.results.tables import bootstrap_ci
from benchmark.schema import base_label

# native parameters whose larger values are the milder transformation
WEAKER_WHEN_LARGER = {"quality", "factor", "scale", "bits", "colors", "colours", "size",
                      "max_side", "longest_side"}
KEYS = ["dataset", "generator", "image_id"]


def numeric(v) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def strength_axes(samples: pd.DataFrame) -> dict[str, tuple[str | None, dict[str, float]]]:
    """Per transform family: the parameter that varies across its jobs and each job's value.
    Where no number varies (one strength, or settings that are not numbers) the key is None
    and each job's place is that of its label among the family's labels: a category."""
    configs = {job: (job_config(job).get("transform") or {}) for job in samples["job"].unique()}
    labels = dict(samples.drop_duplicates("job")[["job", "transform"]].itertuples(index=False))
    families: dict[str, list[str]] = {}
    for job, label in labels.items():
        families.setdefault(base_label(label), []).append(job)
    axes = {}
    for family, jobs in families.items():
        keys = sorted({k for j in jobs for k in configs[j] if not k.startswith("_")})
        varying = [k for k in keys
                   if len({json.dumps(configs[j].get(k), sort_keys=True) for j in jobs}) > 1
                   and all(numeric(configs[j].get(k)) is not None for j in jobs)]
        if varying:
            axes[family] = (varying[0], {j: numeric(configs[j].get(varying[0])) for j in jobs})
        else:
            places = list(dict.fromkeys(labels[j] for j in jobs))
            axes[family] = (None, {j: float(places.index(labels[j])) for j in jobs})
    return axes


def normalised(key: str, values: dict[str, float]) -> tuple[dict[str, float], str]:
    """Each job's strength on [0, 1] and how it was mapped."""
    if key == "strength":
        return dict(values), "transform.strength (WAVES's [0, 1] scale)"
    low, high = min(values.values()), max(values.values())
    if high == low:
        raise BenchError(f"{key}: one value only; a score needs a strength grid")
    mild, strong = (high, low) if key in WEAKER_WHEN_LARGER else (low, high)
    return ({j: (v - mild) / (strong - mild) for j, v in values.items()},
            f"{key} {mild:g} -> {strong:g} mapped to 0 -> 1")


def _per_image(samples: pd.DataFrame, metric: str, pair: str) -> pd.DataFrame:
    rows = samples[(samples["metric"] == metric) & (samples["pair"] == pair)
                   & (samples["image_id"] != "*")]
    return rows[[*KEYS, "defense", "transform", "job", "value"]]


def _best(samples: pd.DataFrame, metric: str) -> pd.Series:
    """m of an edit against itself, per image: control at identity, or none's protection."""
    control = _per_image(samples, metric, "control")
    identity = control[control["transform"].map(base_label) == "identity"]
    if identity.empty:
        protection = _per_image(samples, metric, "protection")
        identity = protection[protection["defense"].map(base_label) == "none"]
    if identity.empty:
        raise BenchError(f"{metric}: the score needs the value of an edit against itself: add "
                         f"transform=identity (its control pair) or defense=none to the sweep")
    return identity.groupby(KEYS)["value"].first()


def retention(samples: pd.DataFrame, metric: str, higher_is_better: bool | None,
              seed: int = 0) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per defense, family and strength: mean rho, its bootstrap interval and n; and how each
    family's strengths were mapped to [0, 1]."""
    if higher_is_better is None:
        raise BenchError(f"{metric}: its direction is unknown, so 'what the defense still "
                         f"changes' has no sign; choose a metric with a direction")
    sign = 1.0 if higher_is_better else -1.0
    best = _best(samples, metric)
    if not np.isfinite(best.to_numpy(dtype=float)).all():
        raise BenchError(f"{metric}: an edit against itself scores infinitely well, so "
                         f"effect(0) is infinite; choose a bounded metric (ssim, lpips, ...)")
    protection = _per_image(samples, metric, "protection").groupby(
        [*KEYS, "defense"])["value"].first()
    edits, controls = _per_image(samples, metric, "edit"), _per_image(samples, metric, "control")
    if edits.empty or protection.empty:
        raise BenchError(f"{metric}: no edit/protection rows; a score needs jobs run with a "
                         f"generator and pairs [edit, protection, control]")
    control = controls.groupby([*KEYS, "transform"])["value"].first()
    rows, mappings = [], {}
    for family, (key, values) in strength_axes(samples).items():
        if family == "identity" or key is None:
            continue
        strengths, mappings[family] = normalised(key, values)
        mine = edits[edits["transform"].map(base_label) == family]
        mine = mine[mine["defense"].map(base_label) != "none"]
        for (defense, job), group in mine.groupby(["defense", "job"], sort=False):
            index = pd.MultiIndex.from_frame(group[KEYS])
            at_zero = sign * (best.reindex(index).to_numpy()
                              - protection.reindex([(*k, defense) for k in index]).to_numpy())
            ctl = control.reindex([(*k, group["transform"].iloc[0]) for k in index]).to_numpy()
            effect = sign * (ctl - group["value"].to_numpy())
            usable = np.isfinite(effect) & np.isfinite(at_zero) & (at_zero > 0)
            rho = effect[usable] / at_zero[usable]
            low, high = bootstrap_ci(rho, seed) if len(rho) > 1 else (math.nan, math.nan)
            rows.append({"defense": defense, "family": family, "key": key,
                         "native": values[job], "strength": strengths[job],
                         "rho": float(rho.mean()) if len(rho) else math.nan,
                         "low": low, "high": high, "n": int(usable.sum()),
                         "dropped": int((~usable).sum()), "job": job})
    if not rows:
        raise BenchError("no transformation family with a numeric strength grid beside "
                         "transform=identity in these results")
    return (pd.DataFrame(rows).sort_values(["defense", "family", "strength"],
                                           ignore_index=True), mappings)


def area(strengths: np.ndarray, rho: np.ndarray) -> float:
    """Area under rho over [0, 1]: rho(0) = 1 unless strength 0 was swept, and rho stays at
    its last value after the strongest swept strength (a grid that stops short of 1 says so
    in the table's note through its mapping)."""
    curve = {0.0: 1.0}
    curve.update(zip(map(float, strengths), map(float, rho)))
    xs = sorted(curve)
    ys = [curve[x] for x in xs]
    if xs[-1] < 1:
        xs, ys = [*xs, 1.0], [*ys, ys[-1]]
    return float(np.trapezoid(ys, xs))


def breaking_point(strengths: np.ndarray, rho: np.ndarray) -> float | None:
    """The weakest swept strength at which rho falls below 0.5 (None: it never does)."""
    below = [s for s, r in sorted(zip(strengths, rho)) if r < 0.5]
    return float(below[0]) if below else None


def scores(points: pd.DataFrame, samples: pd.DataFrame, seed: int = 0,
           resamples: int = 1000) -> pd.DataFrame:
    """Per defense and family: AUC with a bootstrap interval over the per-strength means, the
    breaking point and the fidelity PSNR/SSIM of T(x_adv) vs x at it."""
    fidelity = samples[(samples["pair"] == "fidelity") & (samples["image_id"] != "*")]
    rng = np.random.default_rng(seed)
    out = []
    for (defense, family), group in points.groupby(["defense", "family"], sort=False):
        group = group.dropna(subset=["rho"])
        if group.empty:
            continue
        xs, ys = group["strength"].to_numpy(float), group["rho"].to_numpy(float)
        spread = ((group["high"] - group["low"]) / (2 * 1.96)).fillna(0).to_numpy(float)
        draws = [area(xs, ys + rng.standard_normal(len(ys)) * spread) for _ in range(resamples)]
        point = breaking_point(xs, ys)
        row = {"defense": defense, "family": family, "auc": area(xs, ys),
               "auc_low": float(np.percentile(draws, 2.5)),
               "auc_high": float(np.percentile(draws, 97.5)),
               "breaking_point": point, "at": None, "psnr": math.nan, "ssim": math.nan}
        if point is not None:
            job = group[group["strength"] == point]["job"].iloc[0]
            row["at"] = f"{group['key'].iloc[0]}={group[group['strength'] == point]['native'].iloc[0]:g}"
            for metric in ("psnr", "ssim"):
                values = fidelity[(fidelity["job"] == job) & (fidelity["metric"] == metric)]
                row[metric] = float(values["value"].mean()) if len(values) else math.nan
        out.append(row)
    return pd.DataFrame(out)


def score_table(samples: pd.DataFrame, metric: str, higher_is_better: bool | None,
                fmt: str = "md", seed: int = 0) -> str:
    """Defenses x families: `AUC [95 % interval]; breaks at <native> (PSNR dB, SSIM)`."""
    points, mappings = retention(samples, metric, higher_is_better, seed)
    table = scores(points, samples, seed)
    if fmt == "csv":
        return table.to_csv(index=False)
    cells = {}
    for row in table.itertuples(index=False):
        text = f"{row.auc:.2f} [{row.auc_low:.2f}, {row.auc_high:.2f}]"
        if row.breaking_point is None:
            text += "; holds"
        else:
            quality = ", ".join(f"{m.upper()} {getattr(row, m):.3g}" for m in ("psnr", "ssim")
                                if not math.isnan(getattr(row, m)))
            text += f"; breaks at {row.at}" + (f" ({quality})" if quality else "")
        cells[(row.defense, row.family)] = text
    defenses = list(dict.fromkeys(table["defense"]))
    families = list(dict.fromkeys(table["family"]))
    frame = pd.DataFrame([[cells.get((d, f), "") for f in families] for d in defenses],
                         index=pd.Index(defenses, name="defense"), columns=families)
    notes = [(f"Retention AUC of the protection against {metric} on edits (1 = fully kept, "
              f"0 = gone), seeded bootstrap 95 % interval (seed {seed}); breaking point: the "
              f"weakest strength where retention < 0.5, with the fidelity of T(x_adv) vs x "
              f"there.")]
    notes += [f"{family}: {how}" for family, how in mappings.items()]
    dropped = int(points["dropped"].sum())
    if dropped:
        notes.append(f"{dropped} image-strength value(s) left out: the protection changed "
                     f"nothing in their edit (effect(0) <= 0)")
    if fmt == "latex":
        body = frame.to_latex(escape=True)
        return body + "".join(f"% {n}\n" for n in notes)
    return frame.to_markdown() + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
