"""scripts/bench_defenses.py: the defenses it times come from the config group; with --tiny it
runs on the CPU and reports every row it is asked for."""

import csv
import importlib.util
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from benchmark.build import build
from benchmark.models.tiny import FULL_SIZE
from benchmark.paths import config_dir

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


def test_unknown_defenses_are_named_with_the_choices():
    with pytest.raises(SystemExit, match=r"\['bogus'\].*'advdm'.*'sdst'"):
        load_script().main(["--tiny", "--defenses", "advdm,bogus"])


def test_every_defense_config_is_timed_or_skipped_with_a_reason():
    script = load_script()
    group = {p.stem for p in (config_dir() / "defense").glob("*.yaml")}
    selection = script.select_defenses()
    assert set(selection.timed) | set(selection.skipped) == group
    assert not set(selection.timed) & set(selection.skipped)
    assert all(selection.skipped.values())
    assert set(selection.timed) >= {"photoguard_encoder", "photoguard_encoder_inpaint",
                                     "photoguard_diffusion", "advdm", "mist", "sds", "sdst",
                                     "diffusionguard", "editshield", "facelock"}
    assert set(selection.skipped) >= {"anti_forgery", "cmua", "df_rap", "disrupting_deepfakes",
                                      "silencer_i", "faceshield", "noise", "none"}
    assert "h94/IP-Adapter" in selection.skipped["faceshield"]
    assert "hallo" in selection.skipped["silencer_i"]
    for name, published in selection.timed.items():  # as the defense's own file states it
        own = yaml.safe_load((config_dir() / "defense" / f"{name}.yaml").read_text())
        assert published == own.get("iterations", published), name


def test_a_defense_dropped_into_the_group_is_timed_without_editing_the_script(tmp_path):
    script = load_script()
    configs = tmp_path / "configs"
    shutil.copytree(config_dir(), configs)
    (configs / "defense" / "advdm_longer.yaml").write_text(
        "defaults:\n  - advdm\n  - _self_\n\niterations: 250\n")
    (configs / "defense" / "gan_attack.yaml").write_text(
        "_target_: benchmark.defenses.noise.UniformNoise\nmodel: someone/a-gan\n")
    selection = script.select_defenses(configs=configs)
    assert selection.timed["advdm_longer"] == 250
    assert "someone/a-gan" in selection.skipped["gan_attack"]
    cfg = script.defense_config("advdm_longer", False, "cpu", 3, "bf16", configs=configs)
    assert (cfg.model, cfg.iterations, cfg.precision) == ("random/sd-v1-5", 3, "bf16")


def test_timed_defenses_run_on_random_twins_at_their_composed_settings():
    """Full size: the published checkpoint's random twin, stand-ins for the networks that cannot
    be downloaded offline, the rest as a run composes it; --tiny: the tiny models."""
    script = load_script()
    for name in script.select_defenses().timed:
        full = script.defense_config(name, False, "cpu", 3, "fp16")
        tiny = script.defense_config(name, True, "cpu", 1, "fp32")
        assert script.attacked_model(full)[1] in FULL_SIZE, name
        assert script.attacked_model(tiny)[1].startswith("tiny/"), name
        assert full.iterations == 3 and tiny.iterations == 1
        # an encoder attack is timed at its encoder's dtype, the others under autocast
        assert OmegaConf.select(full, script.precision_key(full)) == "fp16", name
        assert script.precision_key(full) == ("encoder.dtype" if "encoder" in full
                                              else "precision"), name
    encoder = script.defense_config("photoguard_encoder", False, "cpu", 3, "bf16").encoder
    assert (encoder.model, encoder.dtype) == ("random/sd-v1-5", "bf16")
    facelock = script.defense_config("facelock", False, "cpu", 3, "fp32")
    assert (facelock.face_model, facelock.lpips_random_backbone, facelock.lpips_net) == (
        "random", True, "vgg")
    assert script.defense_config("photoguard_diffusion", False, "cpu", 3, "fp32").grad_samples == 10
    assert script.defense_config("sdst", False, "cpu", 3, "fp32").textural is True
    assert script.defense_config("mist", False, "cpu", 3, "fp32").model == "random/sd-v1-5"


def test_the_full_size_runs_use_sd15_architectures():
    """Without --tiny the script attacks the loader's random/* models: SD 1.5's networks
    (the released checkpoints' parameter counts; 9 and 8 UNet input channels)."""
    from benchmark.models.tiny import tiny_text_encoder, tiny_unet, tiny_vae

    script = load_script()
    assert sorted(set(script.RANDOM_TWINS.values())) == ["random/instruct-pix2pix",
                                                        "random/sd-v1-5", "random/sd-v1-5-inpaint"]
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
    d = build(bench.defense_config("photoguard_encoder", True, "cpu", 1, "fp32"), "defense")
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
                        "--repeats", "3", "--iterations", "4"])  # one noisy repeat is left out
    assert rows[0]["defense"] == "photoguard_encoder"
    for key in ("ratio_b1", "s_per_it_b1", "img_per_s_b1", "floor_s_b1"):  # measured, finite
        assert math.isfinite(rows[0][key]) and rows[0][key] > 0, (key, rows[0][key])
