"""Model-based purifiers on tiny random models (the code paths, not the models' quality)."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from benchmark.build import build
from benchmark.errors import BenchError, ConfigValueError, MissingModelError
from benchmark.paths import config_dir
from benchmark.transforms.diffpure import DiffPure
from benchmark.transforms.gridpure import GrIDPure, grid_starts
from benchmark.transforms.impress import Impress
from benchmark.transforms.noisy_upscale import NoisyUpscale


@pytest.fixture(scope="module")
def x64(portraits64):
    return portraits64[:2]


def test_diffpure_noises_and_denoises_reproducibly(x64):
    t = DiffPure(model="tiny/sd", t=100, steps=20, resolution=32, device="cpu")
    y = t(x64, [1, 2])
    assert y.shape == x64.shape and 0 <= y.min() and y.max() <= 1
    assert (y - x64).abs().mean() > 0.01
    assert torch.allclose(t(x64, [1, 2]), y)
    assert not torch.allclose(t(x64, [3, 4]), y)
    single = torch.cat([t(x64[i:i + 1], [s]) for i, s in enumerate([1, 2])])
    assert torch.allclose(single, y, atol=1e-4)


def test_diffpure_checks_its_timestep_and_model():
    with pytest.raises(ConfigValueError, match="t=0"):
        DiffPure(model="tiny/sd", t=0)
    with pytest.raises(ConfigValueError, match="steps=5"):
        DiffPure(model="tiny/sd", t=100, steps=5)
    with pytest.raises(MissingModelError, match="nobody/nothing"):
        DiffPure(model="nobody/nothing")


def test_gridpure_grid_covers_the_image():
    assert grid_starts(512, 256, 128) == [0, 128, 256]
    assert grid_starts(600, 256, 128) == [0, 128, 256, 344]
    g = GrIDPure(model="tiny/sd", patch=32, stride=16, t=100, steps=10, iterations=1)
    assert len(g.boxes(64, 64)) == 9 and len(g.boxes(64, 48)) == 6


def test_gridpure_merge_is_exact_when_patches_come_back_unchanged(x64, monkeypatch):
    """With an identity purifier the averaging of overlaps and corners must return x."""
    g = GrIDPure(model="tiny/sd", patch=32, stride=16, t=100, steps=10, iterations=3,
                 gamma=0.1)
    calls = []

    def unchanged(squares, seeds):
        calls.append((squares.shape, len(seeds)))
        return squares

    monkeypatch.setattr(g.pure, "purify", unchanged)
    odd = x64[:, :, :, :48]
    assert torch.allclose(g(odd, [0, 1]), odd, atol=0.5 / 255)
    assert calls[0] == ((7, 3, 32, 32), 7)  # 6 grid squares + the corner mosaic


def test_gridpure_runs_diffpure_on_patches(x64):
    g = GrIDPure(model="tiny/sd", patch=32, stride=32, t=100, steps=10, iterations=2,
                 device="cpu")
    x = x64[:1]
    y = g(x, [5])
    assert y.shape == x.shape and (y - x).abs().mean() > 0.005
    assert torch.equal(y, torch.round(y * 255) / 255)  # 8-bit between iterations
    assert torch.equal(g(x, [5]), y)


def _save_tiny_upscaler(root):
    """A random x4-upscaler folder in diffusers' layout (sizes after diffusers' own tests)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

    from benchmark.models import tiny

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(32, 32, 64), latent_channels=4, layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3,
                  scaling_factor=0.08333).save_pretrained(root / "vae")
    UNet2DConditionModel(
        in_channels=7, out_channels=4, block_out_channels=(32, 32, 64), layers_per_block=1,
        sample_size=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                          "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, num_class_embeds=1000,
    ).save_pretrained(root / "unet")
    tiny.tiny_text_encoder().save_pretrained(root / "text_encoder")
    tiny.tiny_tokenizer().save_pretrained(root / "tokenizer")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0001,
                  beta_end=0.02).save_pretrained(root / "scheduler")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001,
                  beta_end=0.02).save_pretrained(root / "low_res_scheduler")
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionUpscalePipeline", "max_noise_level": 350}))


def test_noisy_upscale_with_a_tiny_upscaler(x64, tmp_path):
    _save_tiny_upscaler(tmp_path)
    t = NoisyUpscale(model=str(tmp_path), sigma=0.05, steps=2, low_res=16, device="cpu")
    y = t(x64, [1, 2])
    assert y.shape == x64.shape and 0 <= y.min() and y.max() <= 1
    assert torch.allclose(t(x64, [1, 2]), y, atol=1e-5)
    with pytest.raises(ConfigValueError, match="noise_level=400"):
        NoisyUpscale(model=str(tmp_path), noise_level=400)
    (tmp_path / "low_res_scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(MissingModelError, match="low_res_scheduler"):
        NoisyUpscale(model=str(tmp_path))


def test_impress_reduces_the_autoencoder_inconsistency(x64):
    t = Impress(model="tiny/sd", iterations=10, lr=0.01, lpips_random_backbone=True,
                device="cpu")
    from benchmark.models.diffusion import load_vae

    vae = load_vae("tiny/sd", "fp32", "cpu")
    y = t(x64, [0, 0])
    assert y.shape == x64.shape and 0 <= y.min() and y.max() <= 1
    with torch.no_grad():
        assert (t.consistency(vae, y) < t.consistency(vae, x64)).all()
    assert Impress(model="tiny/sd", strength=0).is_identity


def test_impress_needs_the_lpips_backbone_or_says_how_to_proceed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(BenchError, match="lpips_random_backbone=true"):
        Impress(model="tiny/sd")
    assert Impress(model="tiny/sd", alpha=0).alpha == 0


@pytest.mark.parametrize("name", ["diffpure", "gridpure", "impress"])
def test_tiny_experiment_variants_build_and_run(name, portraits64):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=tiny", f"transform={name}", "device=cpu"])
    assert cfg.transform.model == "tiny/sd"
    t = build(cfg.transform, "transform")
    assert t(portraits64[:1], [0]).shape == portraits64[:1].shape


def test_real_weights_missing_offline_name_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("diffpure", "gridpure", "impress", "noisy_upscale"):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=[f"transform={name}", "device=cpu"])
        try:
            build(cfg.transform, "transform")
        except MissingModelError as e:
            assert cfg.transform.model in str(e)
        else:  # the weights are in this machine's cache
            pass


@pytest.mark.weights
@pytest.mark.gpu
def test_diffpure_with_real_weights_keeps_the_portrait(portraits64):
    t = DiffPure(device="cuda")
    y = t(portraits64, [0, 1, 2])
    assert float(((y - portraits64) ** 2).mean()) < 0.01
