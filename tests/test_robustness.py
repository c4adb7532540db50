"""The robustness score: retention of the protection, its area and breaking point (issue 25)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import bench

from benchmark.errors import BenchError
from benchmark.results import robustness
from benchmark.results.reading import load_samples

IMAGES = ["a", "b", "c"]


def job(root, name, transform, params, rows):
    """A finished job directory written by hand: config.yaml, status.json, samples.csv."""
    folder = root / name
    folder.mkdir()
    (folder / "config.yaml").write_text(json.dumps({"transform": {
        "_target_": f"benchmark.transforms.x.{transform}", **params}}))
    (folder / "status.json").write_text('{"status": "done"}')
    pd.DataFrame([{"dataset": "portraits", "generator": "sd", "seed": 0, "n": 1,
                   "transform": f"{transform}({','.join(f'{k}={v}' for k, v in params.items())})"
                   if params else transform, **r} for r in rows]).to_csv(
        folder / "samples.csv", index=False)


def edits(defense, pair, values):
    return [{"defense": defense, "image_id": i, "pair": pair, "metric": "ssim", "value": v}
            for i, v in zip(IMAGES, values)]


def sweep(root, rho, key="strength", native=None):
    """SSIM on edits for defense `pg` whose retention at each strength is rho(s): best 1,
    protection 0.5 (effect(0) = 0.5), control 0.9 at every strength."""
    job(root, "identity", "identity", {}, edits("pg", "control", [1.0] * 3)
        + edits("pg", "protection", [0.5] * 3) + edits("pg", "edit", [0.5] * 3))
    for k, (s, r) in enumerate(rho.items()):
        value = native[k] if native else s
        edit = 0.9 - 0.5 * r
        job(root, f"jpeg{k}", "jpeg", {key: value},
            edits("pg", "control", [0.9] * 3) + edits("pg", "protection", [0.5] * 3)
            + edits("pg", "edit", [edit] * 3)
            + [{"defense": "pg", "image_id": i, "pair": "fidelity", "metric": "psnr",
                "value": 40 - 10 * s} for i in IMAGES])
    return load_samples([root])


def test_a_linear_retention_has_area_one_half(tmp_path):
    samples = sweep(tmp_path, {s: 1 - s for s in (0.25, 0.5, 0.75, 1.0)})
    points, mappings = robustness.retention(samples, "ssim", True)
    assert np.allclose(points["rho"], [0.75, 0.5, 0.25, 0.0])
    (row,) = robustness.scores(points, samples).itertuples(index=False)
    assert row.auc == pytest.approx(0.5)
    assert row.breaking_point == pytest.approx(0.75)  # 0.5 itself is not below one half
    assert row.psnr == pytest.approx(40 - 7.5)  # the fidelity it costs there
    assert "WAVES" in mappings["jpeg"]


def test_a_step_at_0_3_breaks_at_0_3(tmp_path):
    grid = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
    samples = sweep(tmp_path, {s: 1.0 if s < 0.3 else 0.0 for s in grid})
    points, _ = robustness.retention(samples, "ssim", True)
    (row,) = robustness.scores(points, samples).itertuples(index=False)
    assert row.breaking_point == pytest.approx(0.3)
    assert row.auc == pytest.approx(0.2 + 0.05)  # 1 up to 0.2, the ramp to 0.3, then 0


def test_a_native_parameter_is_mapped_from_mildest_to_strongest(tmp_path):
    samples = sweep(tmp_path, {0.0: 1.0, 0.5: 0.5, 1.0: 0.0}, key="quality",
                    native=[95, 52.5, 10])
    points, mappings = robustness.retention(samples, "ssim", True)
    assert list(points["strength"]) == [0.0, 0.5, 1.0]  # quality 95 is the mildest
    assert mappings["jpeg"] == "quality 95 -> 10 mapped to 0 -> 1"


def test_a_metric_without_a_bounded_best_or_direction_is_refused(tmp_path):
    samples = sweep(tmp_path, {0.5: 0.5})
    with pytest.raises(BenchError, match="direction is unknown"):
        robustness.retention(samples, "ssim", None)
    infinite = samples.copy()
    infinite.loc[infinite["pair"] == "control", "value"] = np.inf
    with pytest.raises(BenchError, match="infinitely well"):
        robustness.retention(infinite, "ssim", True)


def test_score_and_retention_curves_of_a_tiny_sweep(workdir):
    run = ["experiment=tiny", "defense=noise", "metric=[ssim]", "dataset.limit=2",
           "pairs=[fidelity,edit,protection,control]", "progress=false"]
    bench("run", "-m", *run, "transform=jpeg", "transform.strength=0.3,0.9",
          "hydra.sweep.dir=sweep", cwd=workdir)
    bench("run", *run, "transform=identity", "hydra.run.dir=reference", cwd=workdir)
    table = bench("score", "sweep", "reference", "--metric", "ssim", cwd=workdir).stdout
    row = next(line for line in table.splitlines() if line.startswith("| noise"))
    assert "[" in row and ("breaks at strength=" in row or "holds" in row), table
    assert "jpeg: transform.strength" in table
    bench("plot", "curves", "sweep", "reference", "--metric", "ssim", "--retention",
          "-o", "retention", cwd=workdir)
    assert (workdir / "retention.png").is_file()
