"""Fidelity round 3 (issue 22): the last differences from the reference code, and precision.

Each test pins one behaviour of a defense to what its authors' code does (the reference's
arithmetic written out here, on the tiny random models), or a fact its docstring, config
and README state about the reference (model, precision): SDST's second posterior sample,
EditShield's rotate term, FaceShield's step filter, TIP-RSR's float32 paste-back, the
random start each reference takes its first gradient at, Anti-Forgery's Adam, DF-RAP's
DiffJPEG range, `precision: reference`, the reference models and DiffusionGuard's noise
batch.
"""

import importlib
import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from benchmark.build import build
from benchmark.errors import ConfigValueError
from benchmark.models.sd_ops import NoiseStreams, alphas_cumprod, encode, predict_noise
from benchmark.paths import config_dir

CPU = "cpu"
SEEDS = [11, 12]
TINY_VAE = {"_target_": "benchmark.models.encoders.SDVaeEncoder", "model": "tiny/sd",
            "dtype": "fp32", "device": CPU}
README = Path(__file__).resolve().parents[1] / "docs" / "defenses.md"  # the defense table

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def x(portraits64):
    return F.interpolate(portraits64[:2], size=(32, 32), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def captured_loss(defense, monkeypatch, x, seeds, **kwargs):
    """The loss closure a defense hands to its PGD engine (the engine is not run)."""
    seen = {}

    def keep(x0, loss, seeds, **options):
        seen["loss"], seen["options"] = loss, options
        return x0

    monkeypatch.setattr(defense.pgd, "minimize", keep)
    defense.protect(x, seeds, **kwargs)
    return seen["loss"], seen["options"]


def compose_defense(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=["experiment=tiny", f"defense={name}", "device=cpu",
                                             *overrides])


def doc(module) -> str:
    return " ".join(module.__doc__.split())


# -- 1. SDST: the textural term on a second posterior sample -----------------------------------


def test_sdst_textural_term_reads_a_second_posterior_sample(x, monkeypatch):
    """pgd_sds: z_adv = E(x_adv) for the score, then z_target = E(pattern) and x_target =
    E(x_adv) again for ||x_target - z_target||^2: the textural term's sample is not z_adv."""
    from benchmark.defenses.sds import ScoreDistillation
    from benchmark.defenses.texture_target import PatternLatent, load_pattern

    d = ScoreDistillation(model="tiny/sd", iterations=1, textural=True, device=CPU)
    loss, _ = captured_loss(d, monkeypatch, x, SEEDS)
    got = loss(x)

    parts = d.parts
    noise = NoiseStreams(SEEDS, torch.device(CPU), d.name)
    acp = alphas_cumprod(parts)
    cond = d.prompt_condition(len(x))
    target = PatternLatent(parts.vae, load_pattern(None, tuple(x.shape[-2:])), len(x))
    with torch.no_grad():
        z = encode(parts.vae, x, noise)
        t = noise.randint(len(acp))
        eps = noise.randn_like(z)
        from benchmark.models.sd_ops import add_noise

        residual = predict_noise(parts.unet, add_noise(acp, z, eps, t), t, cond) - eps
        z_pattern = target.sample(noise)
        z_second = encode(parts.vae, x, noise)
    surrogate = (residual * z).flatten(1).sum(1)
    expected = (z_second - z_pattern).pow(2).flatten(1).sum(1) + d.rate * surrogate  # SDS(-)
    reused = (z - z_pattern).pow(2).flatten(1).sum(1) + d.rate * surrogate
    assert not torch.allclose(expected, reused, rtol=1e-4)  # the test can tell them apart
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got, expected)


# -- 2. EditShield rotate: HEAD's perceptual term -----------------------------------------------


def test_editshield_rotate_keeps_the_perceptual_term_as_the_repositorys_head(x):
    from benchmark.defenses import editshield

    d = editshield.EditShield(model="tiny/instruct-pix2pix", setting="rotate", device=CPU)
    x0 = d.starting_image(x)
    v = (x0 + 0.05).clamp(0, 1)
    assert d.beta == pytest.approx(0.1) == editshield.SETTINGS["gaussian"][0]
    assert torch.allclose(d.penalty(v, x, x0), 0.1 * (v - x0).pow(2).flatten(1).mean(1))
    assert "first release, eb18bef, had no perceptual term" in doc(editshield)


# -- 3. FaceShield: blur +step * sign(grad), then subtract --------------------------------------


def test_faceshield_blurs_the_positive_step_and_subtracts_it():
    """attack.py: new_delta = step * sign(grad); blurred on its edge mask; delta -= new_delta.
    The edge mask is not odd (zero-padded Sobel sees edges at the border), so blurring the
    negated step gives another perturbation near the border."""
    from benchmark.defenses.faceshield import blur_edges
    from benchmark.defenses.pgd import LinfPGD

    g = torch.Generator().manual_seed(3)
    x = torch.full((2, 3, 32, 32), 0.5)
    w = torch.randn(x.shape, generator=g)
    pgd = LinfPGD(255, 4, 1, random_start=False)
    got = pgd.minimize(x, lambda v: (v * w).flatten(1).sum(1), [1, 2], step_filter=blur_edges)
    step = 4 / 255 * w.sign()
    expected = (x - blur_edges(step)).clamp(0, 1)
    negated = (x + blur_edges(-step)).clamp(0, 1)
    assert (expected - negated).abs().amax() > 1e-3  # the two orders differ somewhere
    assert torch.allclose(got, expected, atol=1e-7)


# -- 4. TIP-RSR: the paste-back in float32, as facexlib ---------------------------------------


def test_tip_rsr_pastes_the_face_back_in_float32_as_facexlib():
    """facexlib's paste_faces_to_input_image without a parser, written out: the uint8 face and
    background times float32 masks. float64 arithmetic truncates to other uint8 values."""
    from benchmark.transforms.tip_rsr import TipRsr

    rng = np.random.default_rng(0)
    small = cv2.resize(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), (48, 48))
    canvas = cv2.resize(small, (96, 96), interpolation=cv2.INTER_LANCZOS4)
    face = cv2.resize(small[4:44, 4:44], (64, 64), interpolation=cv2.INTER_LINEAR)
    angle, scale = 0.2, 64 / 40
    matrix = np.array([[scale * np.cos(angle), -scale * np.sin(angle), -2.0],
                       [scale * np.sin(angle), scale * np.cos(angle), -9.0]])
    got = TipRsr.paste(SimpleNamespace(upscale=2), canvas, face, matrix, (96, 96))

    inverse = cv2.invertAffineTransform(matrix) * 2
    inverse[:, 2] += 1.0
    restored = cv2.warpAffine(face, inverse, (96, 96))
    kept = cv2.erode(cv2.warpAffine(np.ones((64, 64), np.float32), inverse, (96, 96)),
                     np.ones((4, 4), np.uint8))
    pasted = kept[:, :, None] * restored
    edge = int(np.sum(kept) ** 0.5) // 20
    soft = cv2.GaussianBlur(cv2.erode(kept, np.ones((2 * edge, 2 * edge), np.uint8)),
                            (2 * edge + 1, 2 * edge + 1), 0)[:, :, None]
    expected = soft * pasted + (1 - soft) * canvas
    assert expected.dtype == np.float32 and edge > 0
    assert got.dtype == np.float32
    assert np.array_equal(got.astype(np.uint8), expected.astype(np.uint8))
    assert np.array_equal(got, expected)


# -- 5. the random start: where the first gradient is taken ------------------------------------


def test_the_engine_can_take_its_first_gradient_at_the_unclipped_start():
    from benchmark.defenses.pgd import LinfPGD

    x = torch.zeros(1, 3, 8, 8)  # black: half of any start lies below 0
    for clip_start in (True, False):
        seen = []

        def loss(v, seen=seen):
            seen.append(v.detach().clone())
            return v.flatten(1).sum(1)

        out = LinfPGD(8, 1, 2, clip_start=clip_start).maximize(x, loss, [5])
        delta = (seen[0] - x).abs().amax() * 255
        assert delta <= 8 + 1e-4 and (seen[0].min() < 0) == (not clip_start)
        assert out.min() >= 0 and (seen[1] >= 0).all()  # the first step's projection clips
    unclipped = LinfPGD(8, 1, 0, clip_start=False).start(x, [5])
    assert torch.equal(unclipped.clamp(0, 1), LinfPGD(8, 1, 0).start(x, [5]))


@pytest.mark.parametrize("name, clip", [
    ("photoguard_encoder", False), ("photoguard_encoder_inpaint", False),
    ("disrupting_deepfakes", False), ("df_rap", False), ("silencer_i", False),
    ("advdm", True), ("mist", True), ("facelock", True),
])
def test_each_defense_starts_where_its_reference_does(name, clip):
    """Disrupting Deepfakes, DF-RAP, Silencer and PhotoGuard take their first gradient at the
    unclipped x + delta_0; advertorch's LinfPGDAttack (AdvDM, Mist) and FaceLock clip first."""
    cfg = compose_defense(name)
    assert cfg.defense.clip_start is clip
    defense = build(cfg.defense, "defense")
    assert defense.pgd.clip_start is clip
    module = importlib.import_module(type(defense).__module__)
    assert "clip_start" in doc(module)


def test_cmua_takes_its_first_gradient_at_the_unclipped_start(tmp_path, monkeypatch):
    """attacks.py universal_perturb_*: X = X_nat + U(-eps, eps), gradient at X."""
    from benchmark.defenses.cmua import CMUA
    from benchmark.generators.stargan import StarGAN

    assert compose_defense("cmua").defense.clip_start is False
    stargan = {"_target_": "benchmark.generators.stargan.StarGAN", "weights": "random",
               "resolution": 32, "conv_dim": 8, "repeat_num": 1,
               "source": {"Black_Hair": 1, "Young": 1}, "device": CPU}
    defense = CMUA(editors={"stargan": stargan}, iterations=1, cache_dir=str(tmp_path),
                   training_set={"_target_": "benchmark.data.portraits.PortraitsDataset",
                                 "resolution": 32, "limit": 1})
    assert defense.clip_start is False
    seen = []
    translate = StarGAN.translate

    def spy(self, v, c):
        if torch.is_grad_enabled() and v.requires_grad:
            seen.append(v.detach().clone())
        return translate(self, v, c)

    monkeypatch.setattr(StarGAN, "translate", spy)
    data = defense.training_set
    x = data.load(0).x[None]
    x[..., :4, :] = 0  # black rows: the start reaches below 0 there
    monkeypatch.setattr(type(defense), "_training_batches", lambda self: iter([(x, None)]))
    defense.train()
    assert seen and seen[0].min() < 0
    assert ((seen[0] - x).abs().amax() * 255) <= defense.eps * 255 + 1e-4


def test_photoguard_inpaint_first_gradient_sees_the_demos_start_noise(x, monkeypatch):
    """demo_simple_attack_inpainting: X (the masked image) + delta_0 everywhere, the region to
    repaint included, until `X_adv.data *= mask` after the first step."""
    from benchmark.defenses.masks import masked_image
    from benchmark.defenses.photoguard import PhotoGuardEncoder

    d = PhotoGuardEncoder(TINY_VAE, eps=8, step=2, iterations=2, variant="inpaint",
                          target="image")
    seen = []
    encode_ = d.encoder.forward

    def spy(v):
        if torch.is_grad_enabled():
            seen.append(v.detach().clone())
        return encode_(v)

    monkeypatch.setattr(d.encoder, "forward", spy)
    repaint = d.mask(x)
    d.protect(x, SEEDS)
    first, second = seen[0], seen[1]
    delta0 = d.pgd.start(x, SEEDS) - x
    assert torch.allclose(first, masked_image(x + delta0, repaint) + delta0 * repaint, atol=1e-6)
    assert (first * repaint - 0.5 * repaint).abs().amax() > 0  # noise where it repaints
    assert (second * repaint - 0.5 * repaint).abs().amax() == 0  # clean after one step


# -- 6. Anti-Forgery: Adam's iterates as the reference's --------------------------------------


def test_anti_forgery_follows_adam_on_the_references_variable(x, monkeypatch):
    """utils.py lab_attack: Adam (eps 1e-8) on pert_a over a/110, b/110; here the engine
    optimises v = ab / 2 + 1/2, with Adam's epsilon doubled to match. The edit distance is
    replaced by a smooth one whose gradients sit near Adam's epsilon (the editors' own start
    at a zero distance, where the first gradients are float noise in both codes)."""
    from kornia.color import rgb_to_lab

    from benchmark.defenses.anti_forgery import AB_SCALE, AntiForgery, _rgb

    cfg = compose_defense("anti_forgery", "defense.iterations=6")
    defense = build(cfg.defense, "defense")
    image = x[:1]
    w = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))

    def distance(v):
        return 3e-5 * (v * w).flatten(1).mean(1)

    monkeypatch.setattr(defense, "edit_distance", lambda x, attributes: (distance, lambda i: None))
    got = defense.protect(image, SEEDS[:1])

    lab = rgb_to_lab(image)
    lightness, ab = lab[:, :1], lab[:, 1:] / AB_SCALE
    pert = torch.zeros_like(ab, requires_grad=True)
    adam = torch.optim.Adam([pert], lr=defense.lr, betas=(0.9, 0.999), eps=1e-8)
    grads = []
    for _ in range(6):
        loss = -distance(_rgb(lightness, ab + pert.clamp(-0.05, 0.05))).sum()
        adam.zero_grad()
        loss.backward()
        grads.append(pert.grad.abs().median())
        adam.step()
    expected = _rgb(lightness, ab + pert.detach().clamp(-0.05, 0.05))
    moved = (expected - image).abs().amax()
    assert 1e-9 < min(grads) and max(grads) < 1e-7  # where Adam's epsilon matters
    assert moved > 1e-3
    assert (got - expected).abs().amax() < 1e-3 * moved, ((got - expected).abs().amax(), moved)
    text = doc(importlib.import_module(AntiForgery.__module__))
    assert "before its last `optimizer.step()`" in text and "NaN" in text


def test_the_engines_adam_is_torchs_with_its_epsilon():
    from benchmark.defenses.pgd import PGD

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 4, 4, generator=g)
    w = torch.randn(x.shape, generator=g) * 1e-8  # gradients at Adam's epsilon
    got = PGD(None, 0.255, 5, "none", random_start=False, optimizer="adam",
              adam_eps=3e-8).minimize(x, lambda v: (v * w).flatten(1).sum(1), [0])
    v = x.clone().requires_grad_(True)
    adam = torch.optim.Adam([v], lr=1e-3, eps=3e-8)
    for _ in range(5):
        adam.zero_grad()
        (v * w).sum().backward()
        adam.step()
    assert torch.allclose(got, v.detach().clamp(0, 1), atol=1e-7)


# -- 7. DF-RAP: DiffJPEG returns [-1, 1] -------------------------------------------------------


def test_df_rap_docstring_says_diffjpeg_hands_the_editor_minus_one_to_one():
    from benchmark.defenses import df_rap

    text = doc(df_rap)
    assert "`(image - 0.5) * 2`" in text and "[0, 1] output to StarGAN" not in text


# -- 8. precision: reference ------------------------------------------------------------------

# defense config -> its reference's precision, as each docstring states it
REFERENCE_PRECISIONS = {
    "photoguard_encoder": "fp16 weights, fp16 autocast",
    "photoguard_encoder_inpaint": "fp16 weights, fp16 autocast",
    "photoguard_diffusion": "fp16 weights", "photoguard_diffusion_linf": "fp16 weights",
    "advdm": "fp32", "advdm_minus": "fp32", "mist": "fp32", "sds": "fp32", "sds_plus": "fp32",
    "sdst": "fp32", "diffusionguard": "fp16 weights", "editshield": "bf16 weights",
    "facelock": "fp16 weights, fp16 autocast", "faceshield": "fp32 weights, fp16 autocast",
    "silencer_i": "fp16 weights", "anti_forgery": "fp32", "df_rap": "fp32",
    "disrupting_deepfakes": "fp32", "cmua": "fp32",
}


def defense_class(name: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"defense={name}"])
    module, _, cls = cfg.defense._target_.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def rendered_defenses_page() -> str:
    """docs/defenses.md as the site shows it: its tables made from the configs' cards."""
    spec = importlib.util.spec_from_file_location("catalogue", README.parent / "hooks" /
                                                  "catalogue.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook.on_page_markdown(README.read_text())


def readme_defense_table() -> dict[str, dict[str, str]]:
    text = rendered_defenses_page()
    section = text[text.index("\n## Defenses"):]
    section = section[:section.index("\n## ", 5)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| defense |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for name in re.findall(r"`([a-z0-9_]+)`", cells[0]):
            table[name] = dict(zip(columns, cells))
    return table


@pytest.mark.parametrize("name", sorted(REFERENCE_PRECISIONS))
def test_each_defense_states_its_reference_precision_in_one_voice(name):
    cls = defense_class(name)
    stated = REFERENCE_PRECISIONS[name]
    assert str(cls.reference_precision) == stated
    text = doc(importlib.import_module(cls.__module__))
    assert f"Reference precision: {stated}" in text
    assert "Reference model:" in text
    yaml = (config_dir() / "defense" / f"{name}.yaml").read_text()
    line = next((x for x in yaml.splitlines() if x.startswith("precision:")), None)
    assert line is None or f"reference: {stated}" in line, line
    table = readme_defense_table()
    if name in table:
        assert table[name]["reference precision"] == stated


def test_readme_lists_the_other_defenses_reference_precision():
    """The GAN defenses and Silencer-I have their own README sections; the defense table's
    notes name their reference precision."""
    text = README.read_text()
    section = text[text.index("\n## Defenses"):]
    section = " ".join(section[:section.index("\n## ", 5)].split())
    for name in ("anti_forgery", "df_rap", "disrupting_deepfakes", "cmua", "silencer_i"):
        assert name in section
    assert "Silencer-I's reference precision is fp16 weights" in section


@pytest.mark.parametrize("reference, cuda, cpu", [
    ("fp16 weights", ("fp16", "fp32"), ("fp32", "fp32")),
    ("fp16 weights, fp16 autocast", ("fp16", "fp16"), ("fp32", "fp32")),
    ("fp32 weights, fp16 autocast", ("fp32", "fp16"), ("fp32", "fp32")),
    ("bf16 weights", ("bf16", "fp32"), ("bf16", "fp32")),
    ("fp32", ("fp32", "fp32"), ("fp32", "fp32")),
])
def test_precision_reference_resolves_per_device(reference, cuda, cpu):
    from benchmark.defenses.precision import ReferencePrecision, resolve_precision

    weights, _, autocast = reference.partition(" weights, ")
    weights = weights.split()[0]
    ref = ReferencePrecision(weights, autocast.split()[0] if autocast else None)
    assert str(ref) == reference
    on_gpu = resolve_precision("d", "reference", "fp32", ref, torch.device("cuda"))
    on_cpu = resolve_precision("d", "reference", "fp32", ref, torch.device("cpu"))
    assert (on_gpu.weights, on_gpu.autocast) == cuda and on_gpu.notice is None
    assert (on_cpu.weights, on_cpu.autocast) == cpu
    assert (on_cpu.notice is not None) == (cpu != cuda)
    plain = resolve_precision("d", "bf16", "fp16", ref, torch.device("cuda"))
    assert (plain.weights, plain.autocast, plain.tag) == ("fp16", "bf16", None)


def test_editshield_runs_its_references_bf16_weights_on_cpu(x):
    from benchmark.defenses.editshield import EditShield

    d = EditShield(model="tiny/instruct-pix2pix", iterations=2, precision="reference",
                   device=CPU)
    assert d.parts.vae.dtype == torch.bfloat16 and d.precision == "fp32"
    assert d.version.endswith("+precision:bf16/fp32") and d.notice is None
    out = d.protect(x, SEEDS)
    full = EditShield(model="tiny/instruct-pix2pix", iterations=2, device=CPU).protect(x, SEEDS)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not torch.equal(out, full)  # bf16 weights move the iterates a little
    assert F.cosine_similarity((out - x).flatten(), (full - x).flatten(), dim=0) > 0.9


def test_fp16_references_run_fp32_on_cpu_and_say_so():
    from benchmark.defenses.diffusionguard import DiffusionGuard
    from benchmark.defenses.photoguard import PhotoGuardEncoder

    d = DiffusionGuard(model="tiny/sd-inpaint", iterations=1, precision="reference", device=CPU)
    assert (d.diffusion.dtype, d.precision) == ("fp32", "fp32")
    assert "needs a CUDA device" in d.notice and d.version.endswith("+precision:fp32/fp32")
    e = PhotoGuardEncoder(TINY_VAE, iterations=1, precision="reference")
    assert (e.encoder.dtype_name, e.precision) == ("fp32", "fp32") and "CUDA" in e.notice
    with pytest.raises(ConfigValueError, match="precision=reference"):
        DiffusionGuard(model="tiny/sd-inpaint", dtype="bf16", precision="reference", device=CPU)
    with pytest.raises(ConfigValueError, match="reference"):
        DiffusionGuard(model="tiny/sd-inpaint", precision="fp64", device=CPU)


def test_the_top_level_precision_reaches_every_defense_and_the_paper_presets_set_it():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for name in ("photoguard_encoder", "advdm", "sdst", "diffusionguard", "editshield",
                     "facelock", "faceshield", "photoguard_diffusion_linf"):
            cfg = compose("config", overrides=[f"defense={name}", "precision=reference"])
            assert cfg.defense.precision == "reference", name
            assert compose("config", overrides=[f"defense={name}"]).defense.precision == "fp32"
        for preset in sorted((config_dir() / "experiment").glob("paper_*.yaml")):
            cfg = compose("config", overrides=[f"experiment={preset.stem}"])
            assert cfg.precision == "reference", preset.stem


# -- 9. the reference model of AdvDM and SDS ---------------------------------------------------


@pytest.mark.parametrize("name", ["advdm", "advdm_minus", "sds", "sds_plus", "sdst"])
def test_advdm_and_sds_attack_the_references_sd_v1_4(name):
    cls = defense_class(name)
    text = doc(importlib.import_module(cls.__module__))
    model = re.search(r"Reference model: SD v1\.4 \([^)]*sd-v1-4\.ckpt[^)]*\), here (\S+/\S+) "
                      r"in diffusers form", text)
    assert model, text
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"defense={name}", "scale=full"])
    import inspect

    default = inspect.signature(cls.__init__).parameters["model"].default
    assert cfg.defense.model == model[1] == default == "CompVis/stable-diffusion-v1-4"
    assert "v1.4/1.5" not in text


def test_paper_presets_say_which_model_the_study_ran_or_that_it_is_unknown():
    for preset in ("paper_diffusion", "paper_portraits", "paper_purification"):
        text = (config_dir() / "experiment" / f"{preset}.yaml").read_text()
        assert "the study does not say which Stable Diffusion version" in text
        assert "SD v1.4" in text


# -- 10. DiffusionGuard noise_batch > 1 -------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_diffusionguard_noise_batch_takes_the_norm_of_the_stack(x, batch):
    """attack_diffusionguard.py: loss = -(noise_pred.norm(p=2) / batch_size), the norm of all
    batch_size predictions for one image together."""
    from benchmark.defenses.diffusionguard import DiffusionGuard
    from benchmark.defenses.masks import masked_image

    d = DiffusionGuard(model="tiny/sd-inpaint", iterations=1, noise_batch=batch, device=CPU)
    parts = d.parts
    repaint = d.mask(x)
    cond = d.prompt_condition(len(x))
    t, sigma = d.first_timestep(parts)
    with torch.no_grad():
        got = d.noise_norm(parts, x, repaint, cond, NoiseStreams(SEEDS, torch.device(CPU), "g"),
                           t, sigma)
        noise = NoiseStreams(SEEDS, torch.device(CPU), "g")
        z = encode(parts.vae, masked_image(x, repaint), noise)
        small = F.interpolate(repaint, size=z.shape[-2:])
        predictions = [predict_noise(parts.unet, torch.cat([noise.randn_like(z) * sigma, small, z],
                                                           dim=1), t.expand(len(x)), cond)
                       for _ in range(batch)]
    stack = torch.stack(predictions, dim=1)  # N, B, C, h, w
    expected = stack.flatten(1).norm(dim=1) / batch
    per_sample = torch.stack([p.flatten(1).norm(dim=1) for p in predictions]).mean(0)
    assert torch.allclose(got, expected, rtol=1e-6)
    assert (batch == 1) == torch.allclose(expected, per_sample, rtol=1e-4)

