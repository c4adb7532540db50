"""Differentiable twins: close to the real transform, with a non-zero gradient."""

import pytest
import torch

from benchmark.transforms.diff_jpeg import DifferentiableJpeg
from benchmark.transforms.filters import BoxBlur, GaussianBlur
from benchmark.transforms.jpeg import JpegCompression
from benchmark.transforms.noise import GaussianNoise
from benchmark.transforms.resize import Rescale


def psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def gradient_of(transform, x, seeds=None):
    x = x.clone().requires_grad_(True)
    y = transform(x, seeds)
    # A fixed random projection, so that the gradient is not a constant.
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((y * w).sum(), x)
    return g


# (twin, real transform, max mean |difference| in grey levels); tolerances measured on the
# portraits with margin: Pillow's resampling rounds to 8 bits and its Gaussian is three boxes.
TWINS = [
    ("resize bicubic", Rescale(factor=0.5, library="torch"), Rescale(factor=0.5), 1.0),
    ("resize bilinear", Rescale(factor=0.3, interpolation="bilinear", library="torch"),
     Rescale(factor=0.3, interpolation="bilinear"), 1.0),
    ("blur vs opencv", GaussianBlur(sigma=1.5, library="kornia"),
     GaussianBlur(sigma=1.5, library="opencv"), 0.5),
    ("blur vs pillow", GaussianBlur(sigma=1.5, library="kornia"), GaussianBlur(sigma=1.5), 1.5),
    ("box vs opencv", BoxBlur(radius=2, library="kornia"), BoxBlur(radius=2, library="opencv"),
     0.5),
    ("jpeg q75", DifferentiableJpeg(quality=75), JpegCompression(quality=75), 2.5),
    ("jpeg q30", DifferentiableJpeg(quality=30), JpegCompression(quality=30), 3.5),
]


@pytest.mark.parametrize("label,twin,real,levels", TWINS, ids=[t[0] for t in TWINS])
def test_twin_is_close_to_the_real_transform(portraits64, label, twin, real, levels):
    x = portraits64
    assert twin.differentiable and not real.differentiable
    y_twin, y_real = twin(x), real(x)
    assert y_twin.shape == y_real.shape
    assert float((y_twin - y_real).abs().mean()) * 255 < levels
    # Closer to the real transform than the real transform is to its input.
    assert psnr(y_twin, y_real) > psnr(y_real, x)


@pytest.mark.parametrize("label,twin,real,levels", TWINS, ids=[t[0] for t in TWINS])
def test_twin_has_a_gradient(portraits64, label, twin, real, levels):
    g = gradient_of(twin, portraits64)
    assert torch.isfinite(g).all() and g.abs().mean() > 1e-3


def test_diff_jpeg_follows_quality(portraits64):
    x = portraits64
    errors = [float(((DifferentiableJpeg(quality=q)(x) - x) ** 2).mean()) for q in (90, 50, 10)]
    assert errors == sorted(errors)


def test_noise_is_its_own_twin(portraits64):
    x = portraits64.clamp(0.1, 0.9)  # away from the clipping, where the gradient is 1
    t = GaussianNoise(sigma=0.01)
    assert t.differentiable
    x_var = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(t(x_var, [1, 2, 3]).sum(), x_var)
    inside = ((t(x, [1, 2, 3]) > 0) & (t(x, [1, 2, 3]) < 1))
    assert torch.equal(g[inside], torch.ones_like(g[inside]))


def test_twins_work_as_eot_transforms_in_pgd(portraits64):
    """The PGD engine's EOT hook calls t(x, seeds) under autograd: the twins fit it."""
    from benchmark.defenses.pgd import PGD

    x = portraits64[:2]
    target = torch.zeros_like(x)
    pgd = PGD(eps=8, step=2, iterations=2, random_start=False,
              transforms=[DifferentiableJpeg(quality=50), Rescale(factor=0.5, library="torch")])
    out = pgd.minimize(x, lambda z: ((z - target) ** 2).flatten(1).mean(1), [1, 2])
    x_adv = out[0] if isinstance(out, tuple) else out
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() > 0
