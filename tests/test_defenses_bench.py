"""scripts/bench_defenses.py runs on the CPU with --tiny and reports every row it is asked for."""

import csv
import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_defenses.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def load_script():
    spec = importlib.util.spec_from_file_location("bench_defenses", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_defenses_tiny_writes_one_row_per_defense_and_precision(tmp_path):
    script = load_script()
    out = tmp_path / "rows.csv"
    rows = script.main(["--tiny", "--defenses", "sds,photoguard_encoder", "--precisions",
                        "fp32,bf16", "--iterations", "1", "--no-warmup", "--out", str(out)])
    assert [(r["defense"], r["precision"]) for r in rows] == [
        ("sds", "fp32"), ("sds", "bf16"), ("photoguard_encoder", "fp32"),
        ("photoguard_encoder", "bf16")]
    written = list(csv.DictReader(out.open()))
    assert len(written) == 4
    for row in written:
        assert float(row["s_per_iteration_per_image"]) > 0 and row["error"] == ""
        assert row["size"] == "64" and row["model"].startswith("tiny/")
        published = float(row["s_per_image_published"])
        per_it = float(row["s_per_iteration_per_image"])
        assert abs(published - per_it * int(row["published_iterations"])) < 0.01 * published + 0.01
    assert set(script.DEFENSES) >= {"photoguard_encoder", "photoguard_diffusion", "advdm", "mist",
                                     "sds", "sdst", "diffusionguard", "editshield", "facelock"}


def test_the_full_size_runs_use_sd15_architectures():
    """Without --tiny the script attacks the loader's random/* models: SD 1.5's networks
    (the released checkpoints' parameter counts; 9 and 8 UNet input channels)."""
    from benchmark.models.tiny import tiny_text_encoder, tiny_unet, tiny_vae

    script = load_script()
    assert sorted(script.MODELS.values()) == ["random/instruct-pix2pix", "random/sd-v1-5",
                                             "random/sd-v1-5-inpaint"]
    with torch.device("meta"):
        count = {name: sum(p.numel() for p in m.parameters()) for name, m in (
            ("unet", tiny_unet("random/sd-v1-5")), ("inpaint", tiny_unet("random/sd-v1-5-inpaint")),
            ("ip2p", tiny_unet("random/instruct-pix2pix")), ("vae", tiny_vae("random/sd-v1-5")),
            ("text", tiny_text_encoder("random/sd-v1-5")))}
    assert count["unet"] == 859_520_964 and count["vae"] == 83_653_863
    assert count["inpaint"] == count["unet"] + 5 * 320 * 9  # conv_in: 9 input channels
    assert count["ip2p"] == count["unet"] + 4 * 320 * 9
    assert abs(count["text"] - 123_060_480) < 1e6, count



def test_pgd_overhead_script_uses_the_defenses_own_objective_as_floor(monkeypatch):
    """The floor is the loss the defense hands to PGD, once per gradient sample; an engine that
    evaluated it twice per iteration would show a ratio near 2."""
    spec = importlib.util.spec_from_file_location(
        "bench_pgd_overhead", SCRIPT.parent / "bench_pgd_overhead.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    bench = load_script()
    d = bench.make_defense("photoguard_encoder", "tiny/sd", True, torch.device("cpu"), 1, "fp32")
    captured = script.CapturedObjective(d)
    x = torch.rand(1, 3, 32, 32)
    d.protect(x, [0])
    assert captured.loss is not None and captured.penalty is None
    calls = []
    monkeypatch.setattr(d.pgd, "grad_samples", 3)
    loss = captured.loss
    captured.loss = lambda v: calls.append(1) or loss(v)
    captured.forward_backward(x)
    assert len(calls) == 3
    rows = script.main(["--tiny", "--defenses", "photoguard_encoder", "--batches", "1",
                        "--repeats", "1", "--iterations", "2"])
    assert rows[0]["defense"] == "photoguard_encoder"
    for key in ("ratio_b1", "s_per_it_b1", "img_per_s_b1", "floor_s_b1"):  # measured, finite
        assert math.isfinite(rows[0][key]) and rows[0][key] > 0, (key, rows[0][key])
