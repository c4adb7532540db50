"""Every config in the tree composes and builds; targets stay inside the package."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.build import build
from benchmark.errors import BenchError, MissingModelError
from benchmark.paths import config_dir, portraits_dir

# Components with no tiny-model variant in experiment=tiny (their tests build tiny models
# locally); offline they must still fail with the clear missing-model error.
REAL_WEIGHTS_ONLY = {"noisy_upscale"}
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
    assert set(cfg.metric) == {"psnr", "ssim", "lpips", "fid", "latent_shift"}
    assert "SURROGATE" in cfg.notice.text


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
    assert cfg.dataset.resolution == 256 and "SURROGATE" in cfg.notice.text
    assert "iterations" not in cfg.defense  # the scale-down applies to photoguard only
    real = compose_with(["experiment=sd15"])
    assert real.defense.iterations == 1000 and real.dataset.resolution == 512
    assert real.defense.encoder._target_.endswith("SDVaeEncoder")


@pytest.mark.parametrize("group", ["dataset", "defense", "transform", "generator", "metric"])
def test_every_component_builds(group):
    """Offline, every component builds, or names the real model it lacks and then builds on
    the tiny random models of experiment=tiny."""
    needs_weights = []
    for option in options(group):
        overrides = [f"metric=[{option}]" if group == "metric" else f"{group}={option}",
                     "device=cpu", f"dataset.root={portraits_dir()}" if option == "folder" else ""]
        overrides = [o for o in overrides if o]
        cfg = compose_with(overrides)
        node = cfg.metric[option] if group == "metric" else cfg[group]
        try:
            obj = build(node, group)
        except BenchError as e:  # weights absent offline: the error says how to get them
            if isinstance(e, MissingModelError):
                assert e.model_id in OmegaConf.to_yaml(cfg), (option, e.model_id)
            else:
                assert "TORCH_HOME" in str(e) or "HF_HOME" in str(e), (option, str(e))
            needs_weights.append(option)
            if option in REAL_WEIGHTS_ONLY:
                continue
            tiny = compose_with(["experiment=tiny", *overrides])
            obj = build(tiny.metric[option] if group == "metric" else tiny[group], group)
        assert type(obj).__module__.startswith("benchmark.")
    if group in ("dataset", "metric"):
        assert not needs_weights  # these run offline as configured


def test_sd_vae_encoder_offline_names_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_with(["experiment=sd15", "device=cpu"])
    with pytest.raises(MissingModelError) as e:
        build(cfg.defense.encoder, "encoder")
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in str(e.value)
    assert "HF_HOME" in str(e.value)


def test_every_target_in_the_tree_is_an_allowed_component():
    from benchmark.build import resolve_target

    seen = 0
    for path in config_dir().rglob("*.yaml"):
        for line in path.read_text().splitlines():
            line = line.split("#")[0]  # examples in comments are not config
            if "_target_:" in line:
                target = line.split("_target_:")[1].split(",")[0].strip().strip("{}[] ")
                if path.parts[-2] == "hydra" or target.startswith("hydra"):
                    continue  # Hydra's own section: benchmark.safety checks it
                resolve_target(target, str(path))  # raises if refused
                seen += 1
    assert seen > 50


@pytest.mark.parametrize("preset", [p for p in options("experiment") if p.startswith("paper_")])
def test_every_value_a_paper_preset_sweeps_composes(preset):
    """Each defense, transform, generator and metric a preset's sweep names exists, composes
    with the preset and names an allowed component class (a misspelt or unbuilt one would
    otherwise fail only when the sweep reaches it)."""
    from benchmark.build import resolve_target

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        full = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = full.hydra.sweeper.params
    assert params, preset
    for key, values in params.items():
        for value in str(values).split(",") if not str(values).startswith("[") else [values]:
            composed = compose_with([f"experiment={preset}", f"{key}={value}"])
            where = f"{preset}: {key}={value}"
            nodes = composed.metric.values() if key == "metric" else [composed[key]]
            for node in nodes:
                resolve_target(node._target_, where)  # raises if refused or missing
            if key in ("defense", "transform", "generator"):  # the override took effect
                alone = compose_with([f"{key}={value}"])
                assert composed[key]._target_ == alone[key]._target_, where


def test_build_refuses_targets_outside_the_package():
    with pytest.raises(BenchError, match="not allowed"):
        build({"_target_": "os.system", "command": "true"})
    with pytest.raises(BenchError, match="not allowed"):
        build({"_target_": "benchmark.defenses.photoguard.PhotoGuardEncoder",
               "encoder": {"_target_": "subprocess.run", "args": ["true"]}})


def scale_files():
    """Every per-scale variant in the tree: (group, scale, component, path)."""
    found = []
    for path in sorted(config_dir().rglob("*.yaml")):
        if path.parent.name == "scale" and path.parent.parent != config_dir():
            group = path.parent.parent.relative_to(config_dir()).as_posix()
            scale, component = path.stem.split("_", 1)
            found.append((group, scale, component, path))
    return found


def test_components_scale_down_one_way():
    """A component's scale-downs live in <group>/scale/<scale>_<name>.yaml, taken in by the
    component's own defaults list; no top-level group does it for one kind of component."""
    assert {p.name for p in config_dir().iterdir() if p.is_dir()} == {
        "dataset", "defense", "encoder", "experiment", "generator", "hydra", "metric", "scale",
        "transform"}
    files = scale_files()
    assert {g for g, *_ in files} == {"defense", "generator", "transform"}
    for group, scale, component, path in files:
        assert scale in options("scale"), path
        assert component in options(group), path
        text = (config_dir() / group / f"{component}.yaml").read_text()
        assert f"optional /{group}/scale@_here_: ${{scale}}_{component}" in text, (
            f"{group}/{component}.yaml does not take in {path.name}")


@pytest.mark.parametrize("group,scale,component,path", scale_files(),
                         ids=lambda v: v.name if hasattr(v, "name") else str(v))
def test_every_scale_file_applies(group, scale, component, path):
    """Composing `<group>=<name> scale=<scale>` gives each value of the scale file, and the
    file changes something against the full scale."""
    def leaves(node, prefix=""):
        for key, value in node.items():
            if key == "defaults":
                continue
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    values = dict(leaves(OmegaConf.to_container(OmegaConf.load(path))))
    assert values, path
    scaled = compose_with([f"{group}={component}", f"scale={scale}"])[group]
    full = compose_with([f"{group}={component}", "scale=full"])[group]
    for key, value in values.items():
        assert OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(scaled, key)}))[
            "v"] == value, (path.name, key)
    assert any(OmegaConf.select(full, key) != OmegaConf.select(scaled, key) for key in values)


def test_photoguard_linf_differs_from_photoguard_only_in_its_norm():
    """photoguard_diffusion_linf.yaml repeats photoguard_diffusion.yaml (so that its own scale
    file applies after its values); everything but the L-inf budget must stay equal."""
    for scale in options("scale"):
        l2 = compose_with(["defense=photoguard_diffusion", f"scale={scale}"]).defense
        linf = compose_with(["defense=photoguard_diffusion_linf", f"scale={scale}"]).defense
        differ = {k for k in (set(l2) | set(linf)) - {"_card_"} if l2.get(k) != linf.get(k)}
        expected = {"norm", "eps", "step"} | ({"grad_samples"} if scale != "tiny" else set())
        assert differ == expected, (scale, differ)
