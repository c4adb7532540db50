"""The metrics through `bench run`, as a user runs them (offline default preset, tiny sizes)."""

import pandas as pd
from conftest import TINY, bench


def test_offline_default_writes_every_offline_metric_and_no_rows_for_unavailable_ones(workdir,
                                                                                      monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))  # no LPIPS backbone there
    proc = bench("run", *TINY, "dataset.resolution=128", "defense.iterations=2", "device=cpu",
                 "metric=[psnr,ssim,fid,kid,ism,fdfr,lpips,clip_score]", "hydra.run.dir=out",
                 "skip_unavailable_metrics=true", cwd=workdir)
    samples = pd.read_csv(workdir / "out" / "samples.csv", dtype={"image_id": str})
    pairs = {"fidelity", "invisibility"}
    for metric in ("psnr", "ssim", "ism", "fdfr"):
        rows = samples[samples.metric == metric]
        assert set(rows.pair) == pairs and len(rows) == 6, metric
        assert rows["value"].notna().all()
    for metric in ("fid", "kid", "kid_se"):
        rows = samples[samples.metric == metric]
        assert set(rows.pair) == pairs and set(rows.image_id) == {"*"} and set(rows.n) == {3}
    assert (samples[samples.metric == "kid_se"]["value"] > 0).all()
    assert (samples[samples.metric == "fdfr"]["value"] == 0).all()  # every portrait has a face
    assert (samples[samples.metric == "ism"]["value"] > 0.9).all()  # same person, light JPEG

    for metric in ("lpips", "clip_score"):
        assert metric not in set(samples.metric)  # never a made-up number
        warnings = [line for line in proc.stderr.splitlines()
                    if f"metric {metric} is unavailable" in line]
        assert len(warnings) == 1, proc.stderr
    assert "alexnet-owt-7be5be79.pth" in proc.stderr and str(workdir / "torch") in proc.stderr
