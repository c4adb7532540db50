import math

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmark.metrics.fid import frechet_distance
from benchmark.metrics.pixel import PSNR, SSIM
from benchmark.transforms.jpeg import JpegCompression


def test_psnr_and_ssim_equal_scikit_image(portraits64):
    a = portraits64
    b = JpegCompression(quality=40)(a)
    psnr = PSNR().update(a, b)
    ssim = SSIM().update(a, b)
    for i in range(len(a)):
        ai, bi = a[i].permute(1, 2, 0).double().numpy(), b[i].permute(1, 2, 0).double().numpy()
        assert psnr[i].item() == pytest.approx(peak_signal_noise_ratio(ai, bi, data_range=1), abs=1e-9)
        ref = structural_similarity(ai, bi, data_range=1, channel_axis=2, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False)
        assert ssim[i].item() == pytest.approx(ref, abs=1e-9)
    uniform = SSIM(gaussian_weights=False).update(a[:1], b[:1]).item()
    assert uniform == pytest.approx(structural_similarity(
        a[0].permute(1, 2, 0).double().numpy(), b[0].permute(1, 2, 0).double().numpy(),
        data_range=1, channel_axis=2), abs=1e-9)


def test_identical_images_score_perfectly(portraits64):
    assert torch.isinf(PSNR().update(portraits64, portraits64)).all()
    assert torch.allclose(SSIM().update(portraits64, portraits64), torch.ones(3, dtype=torch.float64))


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


def test_fid_is_unavailable_below_two_images():
    from benchmark.metrics.fid import FID

    fid = FID({"_target_": "benchmark.models.encoders.InceptionEncoder", "device": "cpu"})
    fid.update(torch.zeros(1, 4), torch.ones(1, 4))
    assert fid.compute() is None
    fid.reset()
    fid.update(torch.rand(3, 4), torch.rand(3, 4))
    assert math.isfinite(fid.compute())
