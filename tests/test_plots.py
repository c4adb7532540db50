"""`bench plot` (robustness curves, purifier cost) and `bench grid` (qualitative figure)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, bench
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from benchmark.cache import ArtifactCache
from benchmark.data.portraits import PortraitsDataset
from benchmark.errors import BenchError
from benchmark.paths import config_dir
from benchmark.results.job_files import write_job, write_status
from benchmark.results.plots import cost_table, curve_points, qualitative_grid, robustness_curves
from benchmark.results.reading import load_samples
from benchmark.runner import Job

JOBS = [("none", "identity", []), ("noise", "identity", []),
        *[(d, "jpeg", [f"transform.quality={q}"]) for d in ("none", "noise") for q in (90, 40, 10)],
        *[(d, "resize", [f"transform.factor={f}"]) for d in ("none", "noise") for f in (0.75, 0.5)]]


def _label(transform: str, params: list[str]) -> str:
    inner = ",".join(p.split(".", 1)[1] for p in params)
    return f"{transform}({inner})" if inner else transform


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Jobs of a small sweep, run in this process (the CLI path is covered by test_cli)."""
    root = tmp_path_factory.mktemp("plots")
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for i, (defense, transform, params) in enumerate(JOBS):
            cfg = compose("config", overrides=[*TINY, f"defense={defense}",
                                               f"transform={transform}", *params,
                                               "metric=[psnr,ssim]", "device=cpu",
                                               "pairs=[fidelity,invisibility,edit,protection]"])
            with open_dict(cfg):
                cfg.cache_dir = str(root / "cache")
            result = Job(cfg, {"transform": _label(transform, params)}).run()
            job = root / "sweep" / f"{i}_{defense}_{transform}"
            write_job(job, result, cfg)
            write_status(job, "done")
    return root


def test_curve_points_are_the_job_means_at_each_strength(sweep):
    samples = load_samples([sweep / "sweep"])
    points = curve_points(samples, "ssim", "fidelity")
    jpeg = points[points["family"] == "jpeg"]
    assert set(jpeg["key"]) == {"quality"} and sorted(set(jpeg["strength"])) == [10, 40, 90]
    resize = points[points["family"] == "resize"]
    assert set(resize["key"]) == {"factor"} and sorted(set(resize["strength"])) == [0.5, 0.75]
    summary = pd.concat([pd.read_csv(p) for p in (sweep / "sweep").rglob("summary.csv")],
                        ignore_index=True)
    row = summary[(summary["defense"] == "noise") & (summary["transform"] == "jpeg(quality=10)")
                  & (summary["metric"] == "ssim") & (summary["pair"] == "fidelity")]
    point = jpeg[(jpeg["defense"] == "noise") & (jpeg["strength"] == 10)]
    assert point["mean"].item() == pytest.approx(row["mean"].item())
    assert point["half"].item() == pytest.approx(row["ci95_high"].item() - row["mean"].item())
    # stronger JPEG, lower SSIM: the curve goes the way it must
    noise = jpeg[jpeg["defense"] == "noise"].sort_values("strength")
    assert noise["mean"].is_monotonic_increasing
    assert set(points[points["family"] == "identity"]["defense"]) == {"none", "noise"}


def test_robustness_curves_write_png_and_pdf(sweep):
    paths = robustness_curves([sweep / "sweep"], "ssim", "fidelity", sweep / "figs" / "curves")
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    with Image.open(sweep / "figs" / "curves.png") as img:
        a = np.asarray(img.convert("RGB"))
    assert a.shape[1] > a.shape[0] > 300  # two panels side by side
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 50  # lines, bands, text: not blank
    assert (sweep / "figs" / "curves.pdf").read_bytes().startswith(b"%PDF")
    with pytest.raises(BenchError, match="no rows"):
        robustness_curves([sweep / "sweep"], "lpips", "fidelity", sweep / "figs" / "x")


def test_cost_table_reads_the_transform_stage_time(sweep):
    samples = load_samples([sweep / "sweep"])
    table = cost_table(samples, "ssim").set_index("transform")
    assert set(table["defenses"]) == {"noise"}  # purifiers are judged on protected images
    job = next(p for p in (sweep / "sweep").iterdir() if p.name.endswith("noise_jpeg")
               and "quality=90" in json.loads((p / "stats.json").read_text())["labels"]
               ["transform"])
    images = pd.read_csv(job / "images.csv")
    keys = images[images["image"] == "x_t"]["key"]
    cache = ArtifactCache(sweep / "cache")
    timed = [json.loads(cache.path("transform", k, ".json").read_text())["seconds"] for k in keys]
    assert table.loc["jpeg(quality=90)", "cost"] == pytest.approx(np.median(timed))
    stage = json.loads((job / "stats.json").read_text())["stages"]["transform"]
    # the stage time also holds the cache reads and writes
    assert 0 < table.loc["jpeg(quality=90)", "cost"] < stage["seconds"] / stage["computed"]
    assert np.isnan(table.loc["identity", "cost"])  # identity makes nothing


def test_plot_and_grid_commands(sweep):
    out = bench("plot", "cost", "sweep", "--metric", "ssim", "-o", "figs/cost", cwd=sweep).stdout
    assert "cost.png" in out and (sweep / "figs" / "cost.pdf").is_file()
    out = bench("grid", "sweep", "--n", "2", "--where", "transform=jpeg(quality=10)",
                "--cache-dir", "cache", "-o", "figs/grid.png", cwd=sweep).stdout
    assert "grid.png" in out
    with Image.open(sweep / "figs" / "grid.png") as img:
        w, h = img.size
    assert 1.2 < w / h < 2.2  # 6 columns x 4 rows (2 defenses x 2 images)


def test_images_csv_points_at_the_cached_images(sweep):
    job = next(p for p in (sweep / "sweep").iterdir() if p.name.endswith("noise_jpeg"))
    table = pd.read_csv(job / "images.csv", dtype={"image_id": str})
    assert set(table["image"]) == {"x", "x_adv", "x_t", "g_x", "g_adv", "g_t"}
    per_image = table.pivot(index="image_id", columns="image", values="key")
    # G = identity: each edit is the very image it edits (same cache entry)
    assert (per_image["g_x"] == per_image["x"]).all()
    assert (per_image["g_t"] == per_image["x_t"]).all()
    cache = ArtifactCache(sweep / "cache")
    dataset = PortraitsDataset(resolution=64, limit=3)
    for i in range(3):
        sample = dataset.load(i)
        rows = table[table["image_id"] == sample.image_id].set_index("image")
        clean = cache.load_image(rows.loc["x", "stage"], rows.loc["x", "key"])
        assert torch.equal(clean, sample.x)  # the clean image itself is kept for figures
        protected = cache.load_image(rows.loc["x_adv", "stage"], rows.loc["x_adv", "key"])
        assert rows.loc["x_adv", "stage"] == "protect"
        assert 0 < (protected - clean).abs().max() <= 8 / 255 + 1e-6


def test_grid_rows_per_transform_and_missing_cache(sweep, tmp_path):
    path = qualitative_grid([sweep / "sweep"], tmp_path / "g.png", n=1, rows="transform",
                            where={"defense": ["noise"]}, cache_dir=str(sweep / "cache"))
    one = qualitative_grid([sweep / "sweep"], tmp_path / "d.png", n=1, rows="defense",
                           where={"transform": ["identity"]}, cache_dir=str(sweep / "cache"))
    with Image.open(path) as img, Image.open(one) as other:
        # 6 transforms (identity, 3 JPEG, 2 resize) against 2 defenses, 6 columns each
        assert img.size[0] == pytest.approx(other.size[0], rel=0.1)
        assert img.size[1] > 2.5 * other.size[1]
    with pytest.raises(BenchError, match="not in the cache"):
        qualitative_grid([sweep / "sweep"], tmp_path / "h.png", n=1,
                         cache_dir=str(tmp_path / "empty"))


def test_grid_and_plots_into_a_folder(sweep, tmp_path):
    folder = tmp_path / "figures"
    folder.mkdir()
    path = qualitative_grid([sweep / "sweep"], folder, n=1, where={"transform": ["identity"]},
                            cache_dir=str(sweep / "cache"))
    assert path == folder / "grid.png" and path.is_file()
    paths = robustness_curves([sweep / "sweep"], "ssim", "fidelity", f"{tmp_path}/new/")
    assert sorted(p.name for p in paths) == ["curves.pdf", "curves.png"]


def test_a_family_with_one_strength_is_labelled_by_its_name(sweep, tmp_path):
    import matplotlib.pyplot as plt

    drawn = []
    real = plt.Axes.set_xlabel
    one = [d for d in (sweep / "sweep").iterdir() if d.name.endswith("_resize")][:1]
    jpeg = [d for d in (sweep / "sweep").iterdir() if d.name.endswith("_jpeg")]

    def spy(ax, label, *args, **kwargs):
        drawn.append(label)
        return real(ax, label, *args, **kwargs)

    plt.Axes.set_xlabel = spy
    try:
        robustness_curves([*one, *jpeg], "ssim", "fidelity", tmp_path / "c")
    finally:
        plt.Axes.set_xlabel = real
    assert "resize" in drawn and not any("nan" in label for label in drawn)
