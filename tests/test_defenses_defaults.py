"""The defense configs: published defaults, composition, validation, listing.

Each defense's module docstring states its reference values once, with where
they come from (paper / public code, in the reference's units and converted to
pixel units out of 255: "eps 0.06 -> 7.65"). These tests read the values from
those sentences and check that the conversion is right (x 127.5 for [-1, 1]
units), that the YAML config says the same, and that the class's own default
does too: a value mistyped in any one of the three fails.
"""

import inspect
import re

import numpy as np
import pytest
from conftest import bench
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from benchmark.build import build
from benchmark.defenses import (
    advdm,
    diffusionguard,
    editshield,
    facelock,
    mist,
    photoguard,
    sds,
)
from benchmark.defenses.assets import default_pattern, make_pattern
from benchmark.errors import ConfigValueError
from benchmark.paths import config_dir

PM1 = 127.5  # one unit of [-1, 1] in pixel units out of 255
NUM = r"(\d+(?:\.\d+)?(?:e-?\d+)?)"
# the config group is the registry: every defense it holds
DEFENSES = sorted(p.stem for p in (config_dir() / "defense").glob("*.yaml"))


def defaults(name: str) -> dict:
    """The defense's config at its published budget (`scale=full`), as Hydra composes it
    (the group file it extends merged in), interpolations left as written."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"defense={name}", "scale=full"])
    return OmegaConf.to_container(cfg, resolve=False)["defense"]


def stated(module, pattern: str) -> tuple[float, ...]:
    """The numbers a phrase of the module's docstring states (whitespace-insensitive)."""
    doc = " ".join(module.__doc__.split())
    found = re.search(pattern, doc)
    assert found, f"{module.__name__}'s docstring no longer states {pattern!r}"
    return tuple(float(g) for g in found.groups())


def converted(module, key: str, suffix: str = "") -> float:
    """'key A -> B' (A in [-1, 1] units, B out of 255): checks B = A * 127.5, returns B."""
    reference, pixels = stated(module, rf"{key} {NUM}{suffix} -> {NUM}")
    assert pixels == pytest.approx(reference * PM1), (module.__name__, key)
    return pixels


def signature_default(cls, key: str):
    return inspect.signature(cls.__init__).parameters[key].default


def check_same(cls, config: dict, **values):
    """The YAML and the class default hold each stated value."""
    for key, value in values.items():
        assert config[key] == pytest.approx(value), (cls.__name__, key, "yaml")
        assert signature_default(cls, key) == pytest.approx(value), (cls.__name__, key, "code")


def test_photoguard_encoder_defaults():
    cfg = defaults("photoguard_encoder")
    (iterations,) = stated(photoguard, rf"decaying linearly to 1/100 of itself, {NUM} iterations")
    check_same(photoguard.PhotoGuardEncoder, cfg, eps=converted(photoguard, "eps"),
               step=converted(photoguard, "step"), iterations=iterations,
               final_step_fraction=1 / 100)
    assert cfg["schedule"] == "linear" and cfg["target"] == "zero"
    inpaint = defaults("photoguard_encoder_inpaint")
    (step,) = stated(photoguard, rf"step 0\.01 -> {NUM}")
    assert inpaint["step"] == pytest.approx(step) == pytest.approx(0.01 * PM1)
    assert (inpaint["variant"], inpaint["target"], inpaint["mask"]["region"]) == (
        "inpaint", "image", "background")


def test_photoguard_diffusion_defaults():
    l2, linf = defaults("photoguard_diffusion"), defaults("photoguard_diffusion_linf")
    cls = photoguard.PhotoGuardDiffusion
    (steps,) = stated(photoguard, rf"{NUM} denoising steps of DDIM")
    (eta,) = stated(photoguard, rf"DDIM with eta {NUM}")
    (guidance,) = stated(photoguard, rf"guidance {NUM}")
    (iterations,) = stated(photoguard, rf"{NUM} iterations, target 0")
    (reps,) = stated(photoguard, rf"`grad_reps={NUM}`")
    eps_ref, eps, step_ref, step = stated(
        photoguard, rf"the demo's run: eps {NUM} -> {NUM}, step {NUM} -> {NUM}")
    assert (eps, step) == pytest.approx((eps_ref * PM1, step_ref * PM1))
    check_same(cls, l2, eps=eps, step=step, steps=steps, eta=eta, guidance=guidance,
               iterations=iterations, grad_samples=reps)
    assert l2["norm"] == "l2" == signature_default(cls, "norm")
    assert l2["scheduler"] == "ddim" == signature_default(cls, "scheduler")
    linf_eps, linf_step = stated(photoguard, rf"eps 0\.1 -> {NUM}, step 0\.006 -> {NUM}")
    (linf_reps,) = stated(photoguard, rf"default of {NUM} repeats")
    assert (linf["eps"], linf["step"], linf["grad_samples"]) == pytest.approx(
        (linf_eps, linf_step, linf_reps))
    assert (linf_eps, linf_step) == pytest.approx((0.1 * PM1, 0.006 * PM1))
    assert linf["norm"] == "linf" and linf["iterations"] == iterations


@pytest.mark.parametrize("module, cls, names", [
    (advdm, advdm.AdvDM, ["advdm"]), (mist, mist.Mist, ["mist"]),
    (sds, sds.ScoreDistillation, ["sds", "sds_plus", "sdst"]),
])
def test_linf_budgets_steps_and_iterations(module, cls, names):
    eps, step, iterations = stated(module, rf"eps {NUM}/255, step {NUM}/255, {NUM} iterations")
    for name in names:
        check_same(cls, defaults(name), eps=eps, step=step, iterations=iterations)


def test_mist_objective_and_model():
    cfg = defaults("mist")
    (weight,) = stated(mist, rf"10\^\(rate\+3\) = {NUM}")
    check_same(mist.Mist, cfg, weight=weight)
    assert cfg["mode"] == "fused" and "mode 2 = fused" in " ".join(mist.__doc__.split())
    model = re.search(r"here (\S+/\S+) in diffusers form", " ".join(mist.__doc__.split()))[1]
    assert cfg["model"] == model == signature_default(mist.Mist, "model")
    assert "v1-4" in model
    prompt = re.search(r'the prompt "([^"]+)"', " ".join(mist.__doc__.split()))[1]
    assert cfg["prompt"] == prompt == signature_default(mist.Mist, "prompt")


def test_sds_directions():
    assert (defaults("sds")["direction"], defaults("sds_plus")["direction"]) == ("-", "+")
    assert defaults("sdst")["textural"] is True and not defaults("sds")["textural"]


def test_diffusionguard_defaults():
    cfg = defaults("diffusionguard")
    reference_eps, eps = stated(diffusionguard, rf"eps {NUM}/255 in \[-1, 1\] units -> {NUM}")
    reference_step, step, iterations = stated(diffusionguard,
                                              rf"step {NUM}/255 -> {NUM}, {NUM} iterations")
    assert (eps, step) == pytest.approx((reference_eps / 2, reference_step / 2))  # [-1, 1] span 2
    strength, smoothness, rounds = stated(
        diffusionguard, rf"strength {NUM}, smoothness {NUM} and up to {NUM} rounds")
    (steps,) = stated(diffusionguard, rf"{NUM} inference steps")
    check_same(diffusionguard.DiffusionGuard, cfg, eps=eps, step=step, iterations=iterations,
               steps=steps, contour_strength=strength, contour_smoothness=smoothness,
               contour_rounds=rounds)
    assert cfg["mask_augmentation"] == "contour_shrink"


def test_editshield_defaults():
    cfg = defaults("editshield")
    (lr,) = stated(editshield, rf"lr {NUM} on \[0, 1\] pixels")
    (iterations,) = stated(editshield, rf"{NUM} iterations, no budget")
    check_same(editshield.EditShield, cfg, lr=lr, iterations=iterations)
    assert cfg["eps"] is None and cfg["setting"] == "gaussian" == signature_default(
        editshield.EditShield, "setting")
    assert cfg["beta"] is None and cfg["blur_weight"] is None  # the setting's, below
    beta, blur, size, sigma = stated(
        editshield, rf"x_0 = x, beta {NUM}, and blur_weight {NUM} on a {NUM}x\d Gaussian blur "
                    rf"of sigma {NUM}")
    assert editshield.SETTINGS["gaussian"] == (beta, blur)
    assert (editshield.BLUR_SIZE, editshield.BLUR_SIGMA) == (size, sigma)
    degrees, rotate_beta = stated(
        editshield, rf"rotated by {NUM} degrees \([^)]*\), beta {NUM} as in the other two")
    assert rotate_beta == beta  # the repository's HEAD (its first release had none there)
    assert editshield.ROTATE_DEGREES == degrees and editshield.SETTINGS["rotate"] == (beta, 0)


def test_facelock_defaults():
    cfg = defaults("facelock")
    cls = facelock.FaceLock
    eps = converted(facelock, "eps", r" in \[-1, 1\] units")
    (iterations,) = stated(facelock, rf"decaying linearly to 1/100, {NUM} iterations")
    (latent,) = stated(facelock, rf"\+ {NUM} \* MSE\(z, E\(x\)\)")
    (identity_pct,) = stated(facelock, rf"a\(i\) = 1 from {NUM} %")
    (perceptual_pct,) = stated(facelock, rf"b\(i\) = 1 after {NUM} %")
    check_same(cls, cfg, eps=eps, step=converted(facelock, "step"), iterations=iterations,
               latent_weight=latent, identity_from=identity_pct / 100,
               perceptual_after=perceptual_pct / 100, final_step_fraction=1 / 100)
    assert cfg["schedule"] == "linear" and cfg["lpips_net"] == "vgg"


# -- composition, validation, listing -------------------------------------------------------------


def compose_tiny(defense: str, *overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=["experiment=tiny", f"defense={defense}", "device=cpu",
                                             *overrides])


def leaves(node, key: str):
    """Every value stored under `key` at any depth of a config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and not isinstance(v, (dict, list)):
                yield v
            yield from leaves(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from leaves(v, key)


@pytest.mark.parametrize("name", DEFENSES)
def test_every_defense_builds_at_the_tiny_scale(name):
    cfg = compose_tiny(name)
    defense = build(cfg.defense, "defense")
    assert callable(defense.protect)
    resolved = OmegaConf.to_container(cfg, resolve=True)["defense"]
    models = list(leaves(resolved, "model"))
    assert all(m in (None, "random") or str(m).startswith("tiny/") for m in models), (
        "the tiny scale must not need real weights", models)
    assert all(i <= 10 for i in leaves(resolved, "iterations"))


@pytest.mark.parametrize("name, override", [
    ("advdm", "defense.eps=-1"), ("mist", "defense.mode=stylish"),
    ("sds", "defense.direction=up"), ("photoguard_diffusion", "defense.norm=l1"),
    ("diffusionguard", "defense.contour_rounds=1"), ("editshield", "defense.lr=0"),
    ("facelock", "defense.identity_from=2"), ("photoguard_encoder_inpaint",
                                              "defense.mask.region=hair"),
])
def test_bad_values_stop_the_build(name, override):
    with pytest.raises(ConfigValueError):
        build(compose_tiny(name, override).defense, "defense")


def test_bench_ls_lists_every_defense_with_its_budget(tmp_path):
    out = bench("ls", "defense", cwd=tmp_path).stdout
    for name in DEFENSES:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert re.search(r"eps \d|no budget|no protection", line), line


def test_the_shipped_pattern_is_the_generators_output():
    shipped = np.asarray(Image.open(default_pattern()).convert("RGB"))
    assert shipped.shape == (512, 512, 3)
    assert np.array_equal(shipped, make_pattern())
    assert shipped.std() > 60  # high contrast: a texture, not a flat image
