"""Diffusion-targeted defenses on the tiny random models (benchmark/models/tiny.py).

Each defense must keep its budget and [0, 1], be deterministic under its seeds,
and move ITS OWN objective the right way: after the attack the objective
(written out here, independently of the defense's code) is better than at the
start and better than uniform noise of the same budget. Every such test runs a
second time with the PGD engine's step sign flipped, and must then fail: that
is what catches a sign error.

The tiny UNet's expected denoising loss is flat to about 1e-4 across inputs (a
random network barely reacts to its input), far below the noise of one draw of
(t, eps). So these tests freeze each defense's randomness
(`NoiseStreams.frozen`): every loss evaluation replays the same draws, the
objective is a deterministic function, and its improvement is exact.
"""

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.defenses import pgd as pgd_module
from benchmark.defenses.advdm import AdvDM
from benchmark.defenses.diffusionguard import DiffusionGuard
from benchmark.defenses.editshield import DEFAULT_EOT, EditShield
from benchmark.defenses.facelock import FaceLock
from benchmark.defenses.masks import masked_image
from benchmark.defenses.mist import Mist, load_pattern
from benchmark.defenses.photoguard import PhotoGuardDiffusion, PhotoGuardEncoder
from benchmark.defenses.sds import ScoreDistillation
from benchmark.errors import ConfigValueError
from benchmark.images import generator_for
from benchmark.models.lpips import load_lpips
from benchmark.models.sd_ops import NoiseStreams, embed_prompts

CPU = "cpu"
SEEDS = [11, 12]
TINY_VAE = {"_target_": "benchmark.models.encoders.SDVaeEncoder", "model": "tiny/sd",
            "device": CPU}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def x(portraits64):
    """Two real portraits at 32 px (the tiny VAE halves the side: 16x16 latents)."""
    return F.interpolate(portraits64[:2], size=(32, 32), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


@pytest.fixture
def frozen(monkeypatch):
    monkeypatch.setattr(NoiseStreams, "frozen", True)


@pytest.fixture(params=[False, True], ids=["step", "flipped_step"])
def flipped(request, monkeypatch):
    """Run the objective test as is, then with the engine's step sign flipped."""
    if request.param:
        direction, adam = pgd_module.PGD._direction, pgd_module._Adam.update
        monkeypatch.setattr(pgd_module.PGD, "_direction", lambda self, g: -direction(self, g))
        monkeypatch.setattr(pgd_module._Adam, "update", lambda self, g: -adam(self, g))
    return request.param


def noise_like(x, x_adv, region=None, norm="linf"):
    """Uniform noise with the attack's budget: its L-inf (or L2) size, in its region."""
    g = generator_for(99)
    u = (torch.rand(x.shape, generator=g) * 2 - 1)
    if region is not None:
        u = u * region
    delta = x_adv - x
    if norm == "l2":
        u = u * (delta.flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    else:
        u = u * delta.abs().amax(dim=(1, 2, 3), keepdim=True)
    return (x + u).clamp(0, 1)


def check_improved(objective, x, x_adv, x_noise, lower_is_better, flipped):
    """The attack beat both the clean image and noise of its budget, for every image;
    with the step flipped it must not."""
    with torch.no_grad():
        clean, adv, noisy = objective(x), objective(x_adv), objective(x_noise)
    if lower_is_better:
        ok = (adv < clean) & (adv < noisy)
    else:
        ok = (adv > clean) & (adv > noisy)
    assert bool(ok.all()) != flipped, (clean, adv, noisy)


def check_budget(x, x_adv, eps, region=None):
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps / 255 + 1e-6
    assert (x_adv - x).abs().max() > 0
    if region is not None:
        assert torch.equal(x_adv * (1 - region), x * (1 - region))


def sd_latent(parts, v, streams):
    """A scaled sample of the VAE posterior (what the defenses' `encode` draws)."""
    dist = parts.vae.encode(v * 2 - 1).latent_dist
    return (dist.mean + dist.std * streams.randn_like(dist.mean)) * parts.vae.config.scaling_factor


def noised(parts, z, eps, t):
    a = parts.make_scheduler("ddpm").alphas_cumprod[t].float().view(-1, 1, 1, 1)
    return a.sqrt() * z + (1 - a).sqrt() * eps


# -- AdvDM ----------------------------------------------------------------------------------------


def test_advdm_raises_the_denoising_loss(x, frozen, flipped):
    d = AdvDM(model="tiny/sd", iterations=6, device=CPU)
    parts = d.parts
    cond = embed_prompts(parts, [d.prompt]).expand(len(x), -1, -1)

    def denoising_loss(v):
        s = NoiseStreams(SEEDS, torch.device(CPU), "advdm")
        z = sd_latent(parts, v, s)
        t = s.randint(1000)
        eps = s.randn_like(z)
        pred = parts.unet(noised(parts, z, eps, t), t, encoder_hidden_states=cond).sample
        return (pred - eps).pow(2).flatten(1).mean(1)

    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 16)
    check_improved(denoising_loss, x, x_adv, noise_like(x, x_adv), False, flipped)


# -- Mist -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fused", "textural"])
def test_mist_moves_its_fused_and_textural_objectives(x, frozen, flipped, mode):
    d = Mist(model="tiny/sd", iterations=6, mode=mode, device=CPU)
    parts = d.parts
    cond = embed_prompts(parts, [d.prompt]).expand(len(x), -1, -1)
    pattern = load_pattern(None, tuple(x.shape[-2:]))

    def objective(v):
        s = NoiseStreams(SEEDS, torch.device(CPU), "mist")
        z = sd_latent(parts, v, s)
        z_pattern = sd_latent(parts, pattern.expand(len(v), -1, -1, -1), s)
        textural = (z - z_pattern).pow(2).flatten(1).sum(1)
        if mode == "textural":
            return textural
        z = sd_latent(parts, v, s)  # the semantic term's own posterior sample, as Mist's code
        t = s.randint(1000)
        eps = s.randn_like(z)
        pred = parts.unet(noised(parts, z, eps, t), t, encoder_hidden_states=cond).sample
        return textural - 1e4 * (pred - eps).pow(2).flatten(1).mean(1)

    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 16)
    check_improved(objective, x, x_adv, noise_like(x, x_adv), True, flipped)


def test_mist_draws_one_posterior_sample_per_term(x, monkeypatch):
    """psyker-team/mist encodes the image once for the textural and once for the semantic
    loss: two independent samples of q(z | x_adv) per evaluation."""
    import benchmark.defenses.mist as mist_module

    samples, encode = [], mist_module.encode

    def recording_encode(vae, v, noise=None, scaled=True):
        z = encode(vae, v, noise, scaled)
        samples.append(z.detach())
        return z

    monkeypatch.setattr(mist_module, "encode", recording_encode)
    d = Mist(model="tiny/sd", iterations=1, device=CPU)
    d.protect(x, SEEDS)
    assert len(samples) == 2
    assert not torch.allclose(samples[0], samples[1])  # two draws, not one sample reused


# -- SDS(+), SDS(-), SDST ---------------------------------------------------------------------------


def score_direction(parts, x, cond, seeds, stage):
    """(eps_theta(z_t) - eps) at the clean image and the latent noise draw, as SDS draws them."""
    s = NoiseStreams(seeds, torch.device(CPU), stage)
    z = sd_latent(parts, x, s)
    t = s.randint(1000)
    eps = s.randn_like(z)
    return parts.unet(noised(parts, z, eps, t), t, encoder_hidden_states=cond).sample - eps


@pytest.mark.parametrize("direction", ["+", "-"])
def test_sds_moves_the_latent_along_its_score_direction(x, frozen, flipped, direction):
    """SDS's objective is linear in z with slope (eps_theta - eps): <g, z(x_adv) - z(x)>
    must be positive for SDS(+) and negative for SDS(-), beyond what noise does."""
    d = ScoreDistillation(model="tiny/sd", iterations=6, direction=direction, device=CPU)
    parts = d.parts
    cond = embed_prompts(parts, [d.prompt]).expand(len(x), -1, -1)
    with torch.no_grad():
        g = score_direction(parts, x, cond, SEEDS, "sds")
        z0 = sd_latent(parts, x, NoiseStreams(SEEDS, torch.device(CPU), "sds"))

    def progress(v):
        z = sd_latent(parts, v, NoiseStreams(SEEDS, torch.device(CPU), "sds"))
        return ((z - z0) * g).flatten(1).sum(1)

    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 16)
    check_improved(progress, x, x_adv, noise_like(x, x_adv), direction == "-", flipped)


def test_sdst_pulls_toward_the_pattern_with_the_score_term(x, frozen, flipped):
    d = ScoreDistillation(model="tiny/sd", iterations=6, textural=True, device=CPU)
    parts = d.parts
    cond = embed_prompts(parts, [d.prompt]).expand(len(x), -1, -1)
    pattern = load_pattern(None, tuple(x.shape[-2:])).expand(len(x), -1, -1, -1)
    with torch.no_grad():
        g = score_direction(parts, x, cond, SEEDS, "sds")

    def objective(v):  # SDS(-) with texture: ||z - z_pattern||^2 + 5 <g, z>
        s = NoiseStreams(SEEDS, torch.device(CPU), "sds")
        z = sd_latent(parts, v, s)
        s.randint(1000), s.randn_like(z)  # the score draws come between the two latents
        z_pattern = sd_latent(parts, pattern, s)
        return (z - z_pattern).pow(2).flatten(1).sum(1) + 5 * (g * z).flatten(1).sum(1)

    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 16)
    check_improved(objective, x, x_adv, noise_like(x, x_adv), True, flipped)


class BackwardCounter:
    """Counts backward passes through a module and whether its forward ran with autograd."""

    def __init__(self, module):
        self.backward, self.forward_with_grad, self.forward = 0, 0, 0
        self.handles = [module.register_full_backward_hook(self._on_backward),
                        module.register_forward_hook(self._on_forward)]

    def _on_backward(self, *args):
        self.backward += 1

    def _on_forward(self, module, inputs, output):
        self.forward += 1
        self.forward_with_grad += int(torch.is_grad_enabled())

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("defense, unet_gradient, encodes", [
    (lambda: ScoreDistillation(model="tiny/sd", iterations=3, device=CPU), False, 1),
    # SDST encodes x_adv a second time for its textural term, as pgd_sds does
    (lambda: ScoreDistillation(model="tiny/sd", iterations=3, textural=True, device=CPU), False,
     2),
    (lambda: AdvDM(model="tiny/sd", iterations=3, device=CPU), True, 1),
])
def test_sds_skips_the_unets_jacobian_and_advdm_does_not(x, defense, unet_gradient, encodes):
    d = defense()
    parts = d.parts
    unet, encoder = BackwardCounter(parts.unet.conv_out), BackwardCounter(parts.vae.encoder)
    try:
        d.protect(x, SEEDS)
    finally:
        unet.remove()
        encoder.remove()
    assert unet.forward == 3 and encoder.backward == 3 * encodes
    assert (unet.backward == 3) == unet_gradient and (unet.forward_with_grad == 3) == unet_gradient
    assert unet_gradient or unet.backward == 0 and unet.forward_with_grad == 0


# -- PhotoGuard -------------------------------------------------------------------------------------


def test_photoguard_encoder_inpaint_pulls_the_masked_latent_to_the_target(x, flipped):
    d = PhotoGuardEncoder(TINY_VAE, eps=8, step=2, iterations=8, variant="inpaint",
                          target="image")
    repaint = d.mask(x)
    kept = 1 - repaint
    target = d.target_latent(x)

    def distance(v):
        return (d.encoder(masked_image(v, repaint)) - target).flatten(1).norm(dim=1)

    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 8, region=kept)
    check_improved(distance, x, x_adv, noise_like(x, x_adv, kept), True, flipped)


def test_photoguard_diffusion_pulls_the_edit_toward_the_target(x, frozen, flipped):
    d = PhotoGuardDiffusion(model="tiny/sd-inpaint", eps=200.0, step=60.0, iterations=3,
                            grad_samples=1, steps=1, checkpointing=False, device=CPU)
    parts = d.parts
    repaint = d.mask(x)
    n = len(x)
    cond = torch.cat([embed_prompts(parts, [""]).expand(n, -1, -1)] * 2)

    def distance_to_grey(v):
        out = d.edit(parts, v, repaint, cond, NoiseStreams(SEEDS, torch.device(CPU), d.name))
        return (out * 2 - 1).flatten(1).norm(dim=1)

    x_adv = d.protect(x, SEEDS)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv * repaint, x * repaint)
    assert (((x_adv - x) * 255).flatten(1).norm(dim=1) <= 200 + 1e-3).all()
    check_improved(distance_to_grey, x, x_adv, noise_like(x, x_adv, 1 - repaint, "l2"), True,
                   flipped)


def test_photoguard_diffusion_linf_variant_keeps_its_box(x):
    d = PhotoGuardDiffusion(model="tiny/sd-inpaint", norm="linf", eps=12.75, step=12.75,
                            iterations=1, grad_samples=1, steps=1, device=CPU)
    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 12.75, region=1 - d.mask(x))
    assert (x_adv - x).abs().max() > 12 / 255


def test_photoguard_diffusion_runs_ddim_with_eta_one_by_default(x, monkeypatch):
    """The demo passes eta=1 to the inpainting checkpoint's scheduler, a DDIMScheduler;
    the tiny model ships PNDM, so the default must not be 'the checkpoint's own'."""
    from diffusers import DDIMScheduler

    calls = []
    step = DDIMScheduler.step

    @functools.wraps(step)  # keeps the signature the defense inspects
    def recording_step(self, *args, **kwargs):
        calls.append((kwargs.get("eta"), kwargs.get("variance_noise") is not None))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(DDIMScheduler, "step", recording_step)
    d = PhotoGuardDiffusion(model="tiny/sd-inpaint", iterations=1, grad_samples=1, steps=2,
                            checkpointing=False, device=CPU)
    d.protect(x[:1], SEEDS[:1])
    assert calls == [(1.0, True)] * 2


def test_photoguard_diffusion_checkpointing_gives_the_same_gradient(x, frozen):
    kwargs = {"model": "tiny/sd-inpaint", "iterations": 1, "grad_samples": 1, "steps": 1,
              "device": CPU}
    with_ckpt = PhotoGuardDiffusion(checkpointing=True, **kwargs).protect(x, SEEDS)
    without = PhotoGuardDiffusion(checkpointing=False, **kwargs).protect(x, SEEDS)
    assert torch.allclose(with_ckpt, without, atol=1e-5)


# -- DiffusionGuard ---------------------------------------------------------------------------------


def test_diffusionguard_raises_the_first_step_noise_norm(x, frozen, flipped):
    d = DiffusionGuard(model="tiny/sd-inpaint", iterations=5, step=1.5, device=CPU)
    parts = d.parts
    repaint = d.mask(x)
    cond = embed_prompts(parts, [""]).expand(len(x), -1, -1)
    t, sigma = d.first_timestep(parts)

    def first_step_norm(v):
        s = NoiseStreams(SEEDS, torch.device(CPU), d.name)
        m = d.augmented_masks(repaint, s)
        z_image = sd_latent(parts, masked_image(v, m), s)
        latents = s.randn_like(z_image) * sigma
        small = F.interpolate(m, size=z_image.shape[-2:])
        eps = parts.unet(torch.cat([latents, small, z_image], 1), t.expand(len(v)),
                         encoder_hidden_states=cond).sample
        return eps.flatten(1).norm(dim=1)

    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 8, region=1 - repaint)
    check_improved(first_step_norm, x, x_adv, noise_like(x, x_adv, 1 - repaint), False, flipped)


# -- EditShield -------------------------------------------------------------------------------------


def test_editshield_shifts_the_instructpix2pix_embedding(x, frozen, flipped):
    d = EditShield(model="tiny/instruct-pix2pix", iterations=6, device=CPU)
    parts = d.parts

    def embedding(v, stage):
        s = NoiseStreams(SEEDS, torch.device(CPU), stage)
        z = sd_latent(parts, v, s)
        t = s.randint(1000)
        z_t = noised(parts, z, s.randn_like(z), t)
        dist = parts.vae.encode(v * 2 - 1).latent_dist
        return torch.cat([z_t, dist.mean + dist.std * s.randn_like(dist.mean)], 1)

    with torch.no_grad():
        clean = embedding(x, "editshield/clean")

    def objective(v):  # EOT_Gaussion.py: -MSE(emb) + 0.1 MSE(blur) + 0.1 MSE(x_adv, x)
        shift = (embedding(v, "editshield") - clean).pow(2).flatten(1).mean(1)
        return (-shift + 0.1 * (blur5(v) - blur5(x)).pow(2).flatten(1).mean(1)
                + 0.1 * (v - x).pow(2).flatten(1).mean(1))

    x_adv = d.protect(x, SEEDS)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv != x).any()
    check_improved(objective, x, x_adv, noise_like(x, x_adv), True, flipped)


def blur5(v):
    """EOT_Gaussion.py's 5x5 sigma-1.5 blur, zero padded, its kernel normalised (scipy window)."""
    from scipy.signal.windows import gaussian

    k = torch.from_numpy(np.outer(gaussian(5, 1.5), gaussian(5, 1.5))).float()
    k = (k / k.sum())[None, None].repeat(3, 1, 1, 1)
    return F.conv2d(v, k, padding=2, groups=3)


def test_editshield_penalty_is_the_gaussian_scripts(x):
    d = EditShield(model="tiny/instruct-pix2pix", device=CPU)
    assert d.pgd.transforms == []  # no transform drawn per step
    v = (x + 0.05 * torch.randn(x.shape, generator=generator_for(3))).clamp(0, 1)
    expected = (0.1 * (blur5(v) - blur5(x)).pow(2).flatten(1).mean(1)
                + 0.1 * (v - x).pow(2).flatten(1).mean(1))
    assert torch.allclose(d.penalty(v, x, x), expected, rtol=1e-5)


def test_editshield_rotate_setting_starts_from_the_rotated_image(x):
    """EOT_Resize.py rotates the image by 5 degrees once and optimises from there."""
    from torchvision.transforms.functional import rotate

    d = EditShield(model="tiny/instruct-pix2pix", iterations=2, setting="rotate", device=CPU)
    assert (d.beta, d.blur_weight) == (0.1, 0.0)  # the repository's HEAD (first release: 0)
    x_adv = d.protect(x, SEEDS)
    rotated = rotate(x, 5.0)
    assert (x_adv - rotated).abs().max() <= 2.5e-3  # two Adam steps of lr 1e-3
    assert (x_adv - x).abs().mean() > 10 * (x_adv - rotated).abs().mean()
    with pytest.raises(ConfigValueError, match="eot"):
        EditShield(model="tiny/instruct-pix2pix", device=CPU, eot=list(DEFAULT_EOT))


def test_editshield_eot_goes_through_each_differentiable_transform(x, monkeypatch):
    from benchmark.transforms import diff_geometry as eot

    calls = {}
    for cls in (eot.DiffRotate, eot.DiffCenterCrop):
        original = cls.forward

        def spy(self, v, seeds, original=original, name=cls.name):
            calls[name] = calls.get(name, 0) + 1
            out = original(self, v, seeds)
            assert out.shape == v.shape and out.requires_grad
            return out

        monkeypatch.setattr(cls, "forward", spy)
    d = EditShield(model="tiny/instruct-pix2pix", iterations=12, setting="per_step", device=CPU)
    d.protect(x, SEEDS)
    assert set(calls) == {"diff_rotate", "diff_center_crop"}  # blur is the transforms' twin
    with pytest.raises(ConfigValueError, match="differentiable"):
        EditShield(model="tiny/instruct-pix2pix", device=CPU, setting="per_step",
                   eot=[{"_target_": "benchmark.transforms.geometry.Rotate", "angle": 5.0}])


def test_eot_rotation_and_crop_are_differentiable_and_seeded():
    from benchmark.transforms.diff_geometry import DiffCenterCrop, DiffRotate

    v = torch.rand(2, 3, 16, 16, requires_grad=True)
    for t in (DiffRotate(10), DiffCenterCrop(0.5)):
        a = t(v, [1, 2])
        assert a.shape == v.shape and torch.equal(a, t(v, [1, 2]))
        assert not torch.equal(a[0], t(v, [3, 2])[0])
        (g,) = torch.autograd.grad(a.sum(), v)
        assert g.abs().sum() > 0
    assert torch.allclose(DiffRotate(0)(v, [1, 2]), v, atol=1e-5)
    assert torch.allclose(DiffCenterCrop(1.0)(v, [1, 2]), v, atol=1e-5)


# -- FaceLock ---------------------------------------------------------------------------------------


def facelock(**kwargs):
    options = {"model": "tiny/instruct-pix2pix", "face_model": "random", "lpips_net": "squeeze",
               "lpips_random_backbone": True, "device": CPU}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's pretrained= deprecation
        return FaceLock(**{**options, **kwargs})


def test_facelock_raises_identity_distance_latent_shift_and_lpips(x, flipped):
    d = facelock(iterations=8)
    parts = d.parts
    lpips = load_lpips("squeeze", torch.device(CPU), True)
    with torch.no_grad():
        z_clean = parts.vae.encode(x * 2 - 1).latent_dist.mean
        id_clean = d.face_model(x)

    def objective(v):  # every term on, as at the end of the run
        z = parts.vae.encode(v * 2 - 1).latent_dist.mean
        rec = ((parts.vae.decode(z).sample + 1) / 2).clamp(0, 1)
        cosine = F.cosine_similarity(d.face_model(rec), id_clean, dim=1)
        return (-cosine + 0.2 * (z - z_clean).pow(2).flatten(1).mean(1)
                + lpips(rec * 2 - 1, x * 2 - 1).flatten(1).mean(1))

    x_adv = d.protect(x, SEEDS)
    check_budget(x, x_adv, 3.825)
    check_improved(objective, x, x_adv, noise_like(x, x_adv), False, flipped)


def test_facelock_switches_its_terms_on_as_published():
    d = facelock(iterations=100)
    assert d.weights(0) == (0.0, 0.0)
    assert d.weights(25) == (0.0, 0.0) and d.weights(26) == (0.0, 1.0)
    assert d.weights(34) == (0.0, 1.0) and d.weights(35) == (1.0, 1.0)


def test_facelock_face_model_is_pluggable_and_its_own_needs_consent():
    with pytest.raises(ConfigValueError, match="face_model"):
        facelock(face_model="arcface")
    with pytest.raises(ConfigValueError, match="trust_remote_code"):
        FaceLock(model="tiny/instruct-pix2pix", lpips_random_backbone=True, device=CPU)
    custom = facelock(face_model={"_target_": "benchmark.models.face_identity.RandomFaceEmbedder",
                                  "dim": 8, "seed": 3})
    assert custom.face_model(torch.rand(1, 3, 32, 32)).shape == (1, 8)


def test_paper_editing_facelock_stops_first_with_how_to_run_its_recogniser(monkeypatch):
    """The preset's FaceLock (cvlface, no consent) stops when built, before the LPIPS backbone
    or the editor's weights are looked for, and says how to fetch and allow the recogniser."""
    from hydra import compose, initialize_config_dir

    from benchmark.build import build
    from benchmark.defenses import facelock as facelock_module
    from benchmark.paths import config_dir

    def not_reached(*args, **kwargs):
        raise AssertionError("checked after the recogniser's consent")

    monkeypatch.setattr(facelock_module, "_require_backbone", not_reached)
    monkeypatch.setattr(FaceLock, "_setup_model", not_reached)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=paper_editing", "defense=facelock",
                                           "device=cpu"])
    with pytest.raises(ConfigValueError) as stop:
        build(cfg.defense, "defense")
    message = str(stop.value)
    assert "defense.trust_remote_code=true" in message
    assert "bench weights pull --all minchul/cvlface_adaface_vit_base_kprpe_webface4m" in message
    assert "minchul/cvlface_DFA_mobilenet" in message


# -- all of them ------------------------------------------------------------------------------------


ALL = {
    "advdm": lambda: AdvDM(model="tiny/sd", iterations=1, device=CPU),
    "mist": lambda: Mist(model="tiny/sd", iterations=1, device=CPU),
    "sds": lambda: ScoreDistillation(model="tiny/sd", iterations=1, device=CPU),
    "photoguard_encoder": lambda: PhotoGuardEncoder(TINY_VAE, iterations=1, variant="inpaint",
                                                    target="image"),
    "photoguard_diffusion": lambda: PhotoGuardDiffusion(model="tiny/sd-inpaint", iterations=1,
                                                        grad_samples=1, steps=1, device=CPU),
    "diffusionguard": lambda: DiffusionGuard(model="tiny/sd-inpaint", iterations=1, device=CPU),
    "editshield": lambda: EditShield(model="tiny/instruct-pix2pix", iterations=1, device=CPU),
    "facelock": lambda: facelock(iterations=1),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_defense_is_deterministic_under_its_seeds(x, name):
    d = ALL[name]()
    a = d.protect(x, SEEDS)
    assert torch.equal(a, d.protect(x, SEEDS))
    assert not torch.equal(a, d.protect(x, [SEEDS[0] + 100, SEEDS[1] + 100]))
    assert a.dtype == torch.float32 and a.shape == x.shape


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_defense_runs_under_bf16_autocast(x, name):
    d = ALL[name]()
    if not hasattr(d, "precision"):
        pytest.skip("the encoder attack's precision is its encoder's dtype")
    d.precision = "bf16"
    a = d.protect(x[:1], SEEDS[:1])
    assert a.dtype == torch.float32 and torch.isfinite(a).all() and (a != x[:1]).any()


def test_any_defense_can_optimise_through_a_differentiable_transform(x, monkeypatch):
    from benchmark.transforms.diff_jpeg import DifferentiableJpeg

    seen = []
    original = DifferentiableJpeg.forward

    def spy(self, v, seeds):
        seen.append(v.requires_grad)
        return original(self, v, seeds)

    monkeypatch.setattr(DifferentiableJpeg, "forward", spy)
    jpeg = [{"_target_": "benchmark.transforms.diff_jpeg.DifferentiableJpeg", "quality": 75}]
    d = AdvDM(model="tiny/sd", iterations=2, eot=jpeg, device=CPU)
    x_adv = d.protect(x, SEEDS)
    assert len(seen) in (2, 4) and all(seen) and (x_adv != x).any()  # per step (or per image)
    with pytest.raises(ConfigValueError, match="differentiable"):
        Mist(model="tiny/sd", device=CPU, eot=[{"_target_": "benchmark.transforms.jpeg.JpegCompression"}])


def test_vae_only_defenses_load_no_unet():
    for d in (facelock(iterations=1), EditShield(model="tiny/instruct-pix2pix", device=CPU)):
        parts = d.parts
        assert parts.vae is not None and parts.unet is None and parts.text_encoder is None
