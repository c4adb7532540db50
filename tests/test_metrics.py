"""Pixel and distribution metrics against their reference implementations (offline)."""

import logging
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import jpeg
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmark.data.portraits import PortraitsDataset
from benchmark.errors import ConfigValueError
from benchmark.metrics.fid import FID, clean_resize, frechet_distance
from benchmark.metrics.kid import KID, jackknife_std_error, mmd2_unbiased, mmd2_unequal
from benchmark.metrics.pixel import MSSSIM, PSNR, SSIM, gaussian_window

INCEPTION = {"_target_": "benchmark.models.encoders.InceptionEncoder", "device": "cpu"}


@pytest.fixture(scope="module")
def portraits128():
    d = PortraitsDataset(resolution=128)
    return torch.stack([d.load(i).x for i in range(len(d))])


@pytest.fixture(scope="module")
def portraits192():
    d = PortraitsDataset(resolution=192, limit=3)
    return torch.stack([d.load(i).x for i in range(len(d))])


def _hwc(x):
    return x.permute(1, 2, 0).double().numpy()


# -- PSNR / SSIM / MS-SSIM ------------------------------------------------------------------------

@pytest.mark.parametrize("quality", [90, 40, 10])
def test_torch_psnr_and_ssim_equal_scikit_image_on_the_portraits(portraits128, quality):
    a = portraits128
    b = jpeg(a, quality)
    psnr = PSNR().update(a, b)
    psnr64 = PSNR(dtype="float64").update(a, b)
    ssim32 = SSIM().update(a, b)
    ssim64 = SSIM(dtype="float64").update(a, b)
    uniform = SSIM(gaussian_weights=False).update(a, b)
    for i in range(len(a)):
        ai, bi = _hwc(a[i]), _hwc(b[i])
        ref_psnr = peak_signal_noise_ratio(ai, bi, data_range=1)
        assert psnr[i].item() == pytest.approx(ref_psnr, abs=1e-6)
        assert psnr64[i].item() == pytest.approx(ref_psnr, abs=1e-9)
        ref = structural_similarity(ai, bi, data_range=1, channel_axis=2, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False)
        assert abs(ssim32[i].item() - ref) < 1e-5
        assert abs(ssim64[i].item() - ref) < 1e-10
        ref_uniform = structural_similarity(ai, bi, data_range=1, channel_axis=2)
        assert abs(uniform[i].item() - ref_uniform) < 1e-5


def test_skimage_backend_is_the_reference_loop(portraits64):
    a, b = portraits64, jpeg(portraits64, 30)
    assert torch.allclose(SSIM(backend="skimage").update(a, b), SSIM().update(a, b), atol=1e-5)
    assert torch.allclose(PSNR(backend="skimage").update(a, b), PSNR().update(a, b), atol=1e-6)


def test_ssim_window_is_wang_et_al():
    taps = gaussian_window(1.5)
    assert len(taps) == 11  # sigma 1.5 truncated at 3.5 sigma, as scikit-image and scipy do
    assert taps.sum().item() == pytest.approx(1.0)
    assert taps[5] / taps[4] == pytest.approx(math.exp(1 / (2 * 1.5 ** 2)))


def test_identical_images_score_perfectly(portraits64, portraits192):
    assert torch.isinf(PSNR().update(portraits64, portraits64)).all()
    for dtype in ("float32", "float64"):  # exactly 1, not 1 - 6e-8
        assert (SSIM(dtype=dtype).update(portraits64, portraits64) == 1).all()
        assert (SSIM(dtype=dtype, gaussian_weights=False).update(portraits64, portraits64) == 1).all()
        assert (MSSSIM(dtype=dtype).update(portraits192, portraits192) == 1).all()


def test_more_jpeg_damage_lowers_psnr_ssim_and_ms_ssim(portraits192):
    a = portraits192
    scores = {q: [m.update(a, jpeg(a, q)) for m in (PSNR(), SSIM(), MSSSIM())]
              for q in (90, 50, 10)}
    for metric in range(3):
        assert (scores[90][metric] > scores[50][metric]).all()
        assert (scores[50][metric] > scores[10][metric]).all()


def _ms_ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2003 written out per channel with scipy filters (one image, HWC)."""
    from scipy.ndimage import correlate1d

    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    w = gaussian_window(1.5).numpy()

    def local(x):
        return correlate1d(correlate1d(x, w, axis=0, mode="constant"), w, axis=1,
                           mode="constant")[5:-5, 5:-5]

    per_channel = []
    for c in range(a.shape[2]):
        x, y = a[:, :, c], b[:, :, c]
        value = 1.0
        for scale, weight in enumerate(weights):
            if scale:
                h, wd = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
                x = x[:h, :wd].reshape(h // 2, 2, wd // 2, 2).mean((1, 3))
                y = y[:h, :wd].reshape(h // 2, 2, wd // 2, 2).mean((1, 3))
            mx, my = local(x), local(y)
            vx, vy, cxy = local(x * x) - mx ** 2, local(y * y) - my ** 2, local(x * y) - mx * my
            cs = ((2 * cxy + 0.03 ** 2) / (vx + vy + 0.03 ** 2)).mean()
            if scale == len(weights) - 1:
                lum = (2 * mx * my + 0.01 ** 2) / (mx ** 2 + my ** 2 + 0.01 ** 2)
                cs = (lum * (2 * cxy + 0.03 ** 2) / (vx + vy + 0.03 ** 2)).mean()
            value *= max(cs, 0) ** weight
        per_channel.append(value)
    return float(np.mean(per_channel))


def test_ms_ssim_equals_the_written_out_formula(portraits192):
    a, b = portraits192, jpeg(portraits192, 20)
    ours = MSSSIM(dtype="float64").update(a, b)
    for i in range(len(a)):
        assert ours[i].item() == pytest.approx(_ms_ssim_reference(_hwc(a[i]), _hwc(b[i])),
                                               abs=1e-9)
    assert torch.allclose(MSSSIM().update(a, b), ours, atol=1e-5)


def test_ms_ssim_below_its_minimum_size_gives_no_value_and_one_warning(portraits64, caplog):
    metric = MSSSIM()
    with caplog.at_level(logging.WARNING):
        values = [metric.update(portraits64, portraits64) for _ in range(2)]
    assert all(torch.isnan(v).all() for v in values)
    assert sum("176" in r.getMessage() for r in caplog.records) == 1


def test_pixel_metrics_reject_bad_options():
    with pytest.raises(ConfigValueError, match="backend"):
        SSIM(backend="matlab")
    with pytest.raises(ConfigValueError, match="dtype"):
        SSIM(dtype="float16")


@pytest.mark.gpu
def test_pixel_metrics_on_the_gpu_equal_the_cpu(portraits192):
    a, b = portraits192, jpeg(portraits192, 30)
    for make in (PSNR, SSIM, MSSSIM):
        assert torch.allclose(make(device="cuda").update(a, b), make(device="cpu").update(a, b),
                              atol=1e-5)


# -- FID ------------------------------------------------------------------------------------------

def _reference_fid(fa, fb):
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sa, sb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb)
                 - 2 * np.trace(scipy.linalg.sqrtm(sa @ sb).real))


@pytest.mark.parametrize("n,d", [(10, 32), (40, 32), (200, 16)])
def test_frechet_distance_equals_the_sqrtm_formula(n, d):
    rng = np.random.default_rng(n)
    fa = rng.normal(size=(n, d))
    fb = rng.normal(size=(n + 5, d)) * 1.5 + 0.3
    assert frechet_distance(fa, fb) == pytest.approx(_reference_fid(fa, fb), rel=1e-5)
    assert frechet_distance(fa, fa) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("size", [64, 128, 299, 512])
def test_clean_resize_equals_clean_fids_pillow_bicubic(size):
    """clean-fid "clean": 8-bit values, Pillow BICUBIC on float ('F') per channel, clip."""
    rng = np.random.default_rng(size)
    u8 = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    reference = np.stack([np.asarray(Image.fromarray(u8[:, :, c].astype(np.float32), mode="F")
                                     .resize((299, 299), Image.Resampling.BICUBIC))
                          for c in range(3)], axis=-1).clip(0, 255)
    x = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255
    ours = clean_resize(x)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - reference).max() < 0.02  # of 255, on random noise (the worst case)
    # The quantisation step: values already 8-bit pass unchanged, others are rounded.
    assert torch.equal(clean_resize(x + 0.4 / 255), clean_resize(x))


def test_fid_warns_below_the_feature_dimension_and_is_unavailable_below_two(caplog):
    fid = FID(INCEPTION)
    fid.update(torch.zeros(1, 4), torch.ones(1, 4))
    assert fid.compute() is None
    fid.reset()
    fid.update(torch.rand(3, 4), torch.rand(3, 4))
    with caplog.at_level(logging.WARNING):
        assert math.isfinite(fid.compute())
    assert any("2048" in r.getMessage() for r in caplog.records)


def test_more_jpeg_damage_raises_fid_and_kid(portraits128):
    fid, kid = FID(INCEPTION), KID(INCEPTION)
    assert fid.embedder_config == kid.embedder_config  # the runner caches one set of features
    a = portraits128[:4]  # about a second per Inception forward on this CPU
    with torch.no_grad():
        clean = fid.embedder(a)
        damaged = [fid.embedder(jpeg(a, q)) for q in (90, 30, 5)]
    values = {}
    for metric in (fid, kid):
        values[metric.name] = []
        for features in damaged:
            metric.reset()
            metric.update(clean, features)
            values[metric.name].append(metric.compute())
    assert values["fid"][0] < values["fid"][1] < values["fid"][2]
    assert values["kid"][0] < values["kid"][1] < values["kid"][2]
    fid.reset()
    fid.update(clean, clean)
    assert fid.compute() == pytest.approx(0, abs=1e-3)


# -- KID ------------------------------------------------------------------------------------------

def _clean_fid_kernel_distance(fa, fb, subsets, subset_size, rng):
    """clean-fid's kernel_distance, written out: mean unbiased MMD^2 over random subsets."""
    d = fa.shape[1]
    m = min(len(fa), len(fb), subset_size)
    total = 0.0
    for _ in range(subsets):
        x = fb[rng.choice(len(fb), m, replace=False)]
        y = fa[rng.choice(len(fa), m, replace=False)]
        within = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        cross = (x @ y.T / d + 1) ** 3
        total += (within.sum() - np.diag(within).sum()) / (m - 1) - cross.sum() * 2 / m
    return total / subsets / m


def test_kid_equals_clean_fids_kernel_distance_on_small_sets():
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(30, 64)), rng.normal(size=(30, 64)) + 1.0
    kid = KID(INCEPTION)
    kid.update(torch.from_numpy(fa), torch.from_numpy(fb))
    expected = _clean_fid_kernel_distance(fa, fb, 5, 1000, np.random.default_rng(1))
    assert kid.compute() == pytest.approx(expected, rel=1e-9)
    # Unbiased: about 0 for an independent sample of the same distribution.
    fc = rng.normal(size=(30, 64))
    assert abs(mmd2_unbiased(fa, fc)) < 0.1 * mmd2_unbiased(fa, fb)


def test_kid_over_subsets_for_large_sets_is_seeded_and_close_to_the_full_estimate():
    rng = np.random.default_rng(1)
    fa, fb = rng.normal(size=(60, 16)), rng.normal(size=(60, 16)) + 0.3
    values = []
    for _ in range(2):
        kid = KID(INCEPTION, subsets=50, subset_size=40)
        kid.update(torch.from_numpy(fa), torch.from_numpy(fb))
        values.append(kid.compute())
    assert values[0] == values[1]
    assert values[0] == pytest.approx(mmd2_unbiased(fa, fb), rel=0.1)


def test_kid_jackknife_closed_form_equals_the_delete_one_loop():
    rng = np.random.default_rng(2)
    fa, fb = rng.normal(size=(12, 8)), rng.normal(size=(12, 8)) + 0.5
    n = len(fa)
    loo = np.array([mmd2_unbiased(np.delete(fa, i, 0), np.delete(fb, i, 0)) for i in range(n)])
    paired = math.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum())
    assert jackknife_std_error(fa, fb) == pytest.approx(paired, rel=1e-9)

    fc = fb[:9]
    la = np.array([mmd2_unequal(np.delete(fa, i, 0), fc) for i in range(len(fa))])
    lc = np.array([mmd2_unequal(fa, np.delete(fc, j, 0)) for j in range(len(fc))])
    two_sample = math.sqrt((len(fa) - 1) / len(fa) * ((la - la.mean()) ** 2).sum()
                           + (len(fc) - 1) / len(fc) * ((lc - lc.mean()) ** 2).sum())
    assert jackknife_std_error(fa, fc) == pytest.approx(two_sample, rel=1e-9)


def test_kid_standard_error_row_and_minimum_sizes(caplog):
    se = KID(INCEPTION, output="std_error")
    se.update(torch.rand(2, 4), torch.rand(2, 4))
    assert se.compute() is None  # the jackknife needs 3 images
    kid = KID(INCEPTION)
    kid.update(torch.rand(2, 4), torch.rand(2, 4) + 1)
    with caplog.at_level(logging.WARNING):
        assert math.isfinite(kid.compute())
    assert any("< 50" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigValueError, match="output"):
        KID(INCEPTION, output="variance")
