"""End to end through the `bench` command, as a user runs it (offline, tiny sizes)."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, bench
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmark.data.portraits import PortraitsDataset

COLUMNS = ["dataset", "image_id", "defense", "transform", "generator", "seed", "pair", "metric",
           "value", "n"]


def job_dir(root):
    (path,) = [p.parent for p in root.rglob("samples.csv")]
    return path


def pillow_jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_run_writes_results_equal_to_scikit_image_and_reruns_from_cache(workdir):
    args = [*TINY, "defense=none", "transform=jpeg", "transform.quality=60",
            "metric=[psnr,ssim]", "hydra.run.dir=first"]
    out = bench("run", *args, cwd=workdir).stdout
    # the offline preset's SURROGATE notice describes PhotoGuard's encoder attack, not defense=none
    assert "SURROGATE" not in out and "fidelity" in out and "samples.csv" in out
    first = workdir / "first"
    for name in ("samples.csv", "summary.csv", "stats.json", "config.yaml", "status.json"):
        assert (first / name).is_file(), name
    samples = pd.read_csv(first / "samples.csv", dtype={"image_id": str})
    assert list(samples.columns) == COLUMNS
    assert set(samples["transform"]) == {"jpeg(quality=60)"}
    invisible = samples[samples.pair == "invisibility"]
    assert (invisible[invisible.metric == "psnr"]["value"] == float("inf")).all()
    assert (invisible[invisible.metric == "ssim"]["value"] == 1.0).all()

    dataset = PortraitsDataset(resolution=64, limit=3)
    for i in range(3):
        sample = dataset.load(i)
        clean = sample.x.permute(1, 2, 0).double().numpy()
        img = Image.fromarray((clean * 255).round().astype("uint8"))
        jpeg = pillow_jpeg(img, 60)
        t = np.asarray(jpeg, dtype=np.float64) / 255
        rows = samples[(samples.pair == "fidelity") & (samples.image_id == sample.image_id)]
        psnr = rows[rows.metric == "psnr"]["value"].item()
        ssim = rows[rows.metric == "ssim"]["value"].item()
        assert psnr == pytest.approx(peak_signal_noise_ratio(clean, t, data_range=1), abs=1e-6)
        assert ssim == pytest.approx(structural_similarity(
            clean, t, data_range=1, channel_axis=2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False), abs=1e-6)

    stats = json.loads((first / "stats.json").read_text())
    assert stats["stages"]["transform"] == {**stats["stages"]["transform"], "computed": 3,
                                           "cached": 0}
    bench("run", *args[:-1], "hydra.run.dir=second", cwd=workdir)
    again = json.loads((workdir / "second" / "stats.json").read_text())
    assert {k: (v["computed"], v["cached"]) for k, v in again["stages"].items()} == {"job": (0, 1)}
    assert pd.read_csv(workdir / "second" / "samples.csv", dtype={"image_id": str}).equals(samples)


def test_stages_are_shared_between_jobs_that_differ_downstream(workdir):
    common = [*TINY, "defense=photoguard_encoder", "defense.iterations=2", "device=cpu"]
    bench("run", *common, "transform=jpeg", "hydra.run.dir=a", cwd=workdir)
    samples = pd.read_csv(workdir / "a" / "samples.csv", dtype={"image_id": str})
    fid = samples[samples.metric == "fid"]
    assert set(fid["image_id"]) == {"*"} and set(fid["n"]) == {3}
    shift = samples[(samples.metric == "latent_shift")]
    assert set(shift["pair"]) == {"fidelity"} and len(shift) == 3
    assert ((shift["value"] > 0) & (shift["value"] < 1.5)).all()

    bench("run", *common, "transform=resize", "hydra.run.dir=b", cwd=workdir)
    stats = json.loads((workdir / "b" / "stats.json").read_text())["stages"]
    assert (stats["protect"]["computed"], stats["protect"]["cached"]) == (0, 3)
    assert stats["transform"]["computed"] == 3


def test_sweep_then_table(workdir):
    bench("run", "-m", "defense=none,noise", "transform=identity,jpeg", *TINY,
          "metric=[psnr,ssim]", "hydra.sweep.dir=sweep", cwd=workdir)
    jobs = sorted((workdir / "sweep").rglob("samples.csv"))
    assert len(jobs) == 4
    summaries = pd.concat(pd.read_csv(j.parent / "summary.csv") for j in jobs)
    table = bench("table", "sweep", "--metric", "ssim", "--pair", "fidelity", "--format", "csv",
                  cwd=workdir).stdout
    frame = pd.read_csv(io.StringIO(table), index_col=0)
    assert sorted(frame.index) == ["noise", "none"]
    assert sorted(frame.columns) == ["identity", "jpeg"]
    expected = summaries[(summaries["metric"] == "ssim") & (summaries["pair"] == "fidelity")
                         & (summaries["defense"] == "noise") & (summaries["transform"] == "jpeg")]
    assert frame.loc["noise", "jpeg"] == pytest.approx(expected["mean"].item(), abs=1e-4)
    assert frame.loc["none", "identity"] == pytest.approx(1.0)
    md = bench("table", "sweep", "--metric", "psnr", "--pair", "fidelity", "--agg", "std",
               cwd=workdir).stdout
    assert "| noise" in md and "±" in md
    latex = bench("table", "sweep", "--metric", "ssim", "--pair", "fidelity", "--format",
                  "latex", cwd=workdir).stdout
    assert "\\begin{tabular}" in latex
    missing = bench("table", "sweep", "--metric", "lpips", "--pair", "edit", cwd=workdir,
                    check=False)
    assert missing.returncode == 2 and "ssim/fidelity" in missing.stderr


def test_bad_parameter_stops_before_compute(workdir):
    proc = bench("run", *TINY, "transform.quality=101", "hydra.run.dir=bad", cwd=workdir,
                 check=False)
    assert proc.returncode == 1
    assert "quality=101" in proc.stderr and "1..100" in proc.stderr
    assert not (workdir / "cache").exists()  # nothing was computed


def test_unknown_component_lists_the_choices(workdir):
    proc = bench("run", "defense=nope", cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "photoguard_encoder" in proc.stderr and "noise" in proc.stderr


def test_missing_model_is_one_clear_error(workdir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = bench("run", "experiment=sd15", "hydra.run.dir=sd", cwd=workdir, check=False)
    assert proc.returncode == 1
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in proc.stderr
    assert "Traceback" not in proc.stderr


def _folder_with_a_corrupt_file(root):
    root.mkdir()
    for i, color in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (40, 30), color).save(root / f"img{i}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return root


def test_unreadable_image_is_skipped_and_counted(workdir):
    root = _folder_with_a_corrupt_file(workdir / "imgs")
    args = ["dataset=folder", f"dataset.root={root}", "dataset.resolution=32", "defense=noise",
            "metric=[psnr]", "progress=false"]
    proc = bench("run", *args, "hydra.run.dir=ok", cwd=workdir)
    assert "broken.jpg" in proc.stderr
    stats = json.loads((workdir / "ok" / "stats.json").read_text())
    assert stats["images"] == 2 and stats["unreadable"] == [str(root / "broken.jpg")]
    strict = bench("run", *args, "strict=true", "hydra.run.dir=strict", cwd=workdir, check=False)
    assert strict.returncode == 1 and "broken.jpg" in strict.stderr


def test_ls_and_cache_commands(workdir):
    listing = bench("ls", cwd=workdir).stdout
    for name in ("portraits", "photoguard_encoder", "jpeg", "resize", "fid", "latent_shift"):
        assert name in listing
    assert bench("ls", "transform", cwd=workdir).stdout.startswith("transform\n")
    assert bench("ls", "nope", cwd=workdir, check=False).returncode == 2
    bench("run", *TINY, "defense=noise", "metric=[psnr]", "hydra.run.dir=j", cwd=workdir)
    info = bench("cache", "info", cwd=workdir).stdout
    assert "protect" in info and "transform" in info and "job" in info
    assert "removed" in bench("cache", "clear", "--yes", cwd=workdir).stdout
    assert "(empty)" in bench("cache", "info", cwd=workdir).stdout
