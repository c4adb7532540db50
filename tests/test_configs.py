"""Every config in the tree composes and builds; targets stay inside the package."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.build import build
from benchmark.errors import BenchError, MissingModelError
from benchmark.paths import config_dir, portraits_dir

GROUPS = ["dataset", "defense", "transform", "generator", "encoder", "experiment"]


def options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose_with(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_root_config_is_the_offline_default():
    cfg = compose_with([])
    assert cfg.defense._target_.endswith("PhotoGuardEncoder")
    assert cfg.defense.encoder._target_.endswith("InceptionEncoder")
    assert cfg.transform._target_.endswith("JpegCompression")
    assert cfg.generator._target_.endswith("NoGenerator")
    assert set(cfg.metric) == {"psnr", "ssim", "fid", "latent_shift"}
    assert "SURROGATE" in cfg.notice


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group):
    for option in options(group):
        overrides = [f"{group}={option}"]
        if option == "folder":
            overrides.append("dataset.root=.")
        cfg = compose_with(overrides)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_overriding_a_group_keeps_the_offline_preset():
    cfg = compose_with(["defense=noise"])
    assert cfg.dataset.resolution == 256 and "SURROGATE" in cfg.notice
    assert "iterations" not in cfg.defense  # the scale-down applies to photoguard only
    real = compose_with(["experiment=sd15"])
    assert real.defense.iterations == 1000 and real.dataset.resolution == 512
    assert real.defense.encoder._target_.endswith("SDVaeEncoder")


@pytest.mark.parametrize("group", ["dataset", "defense", "transform", "generator", "metric"])
def test_every_component_builds(group):
    for option in options(group):
        overrides = [f"metric=[{option}]" if group == "metric" else f"{group}={option}",
                     "device=cpu", f"dataset.root={portraits_dir()}" if option == "folder" else ""]
        cfg = compose_with([o for o in overrides if o])
        node = cfg.metric[option] if group == "metric" else cfg[group]
        obj = build(node, group)
        assert type(obj).__module__.startswith("benchmark.")


def test_sd_vae_encoder_offline_names_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_with(["experiment=sd15", "device=cpu"])
    with pytest.raises(MissingModelError) as e:
        build(cfg.defense.encoder, "encoder")
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in str(e.value)
    assert "HF_HOME" in str(e.value)


def test_every_target_is_inside_the_package():
    for path in config_dir().rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if "_target_:" in line:
                assert line.split("_target_:")[1].strip().startswith("benchmark."), path


def test_build_refuses_targets_outside_the_package():
    with pytest.raises(BenchError, match="not allowed"):
        build({"_target_": "os.system", "command": "true"})
    with pytest.raises(BenchError, match="not allowed"):
        build({"_target_": "benchmark.defenses.photoguard.PhotoGuardEncoder",
               "encoder": {"_target_": "subprocess.run", "args": ["true"]}})
