"""Each transform equals its reference library on real portraits (64 px), or its formula."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from benchmark.images import from_pil, from_uint8, to_pil, to_uint8
from benchmark.transforms.base import Identity
from benchmark.transforms.chroma import ChromaSubsample
from benchmark.transforms.color import Brightness, Contrast, Gamma, Saturation
from benchmark.transforms.filters import BoxBlur, GaussianBlur, MedianFilter
from benchmark.transforms.geometry import ResizedCrop, Rotate
from benchmark.transforms.jpeg import JpegCompression
from benchmark.transforms.jpeg_social import DFRAP_FREQUENCIES, DFRAP_QUALITIES, SocialJpeg
from benchmark.transforms.noise import GaussianNoise
from benchmark.transforms.pipelines import DisplayCapture, PlatformUpload
from benchmark.transforms.quantize import BitDepth, PaletteQuantize
from benchmark.transforms.resize import PILLOW_FILTERS, Rescale
from benchmark.transforms.webp import WebpCompression

INTERPOLATIONS = list(PILLOW_FILTERS)


def mse(a, b):
    return float(((a - b) ** 2).mean())


def pil_images(x):
    return [to_pil(xi) for xi in x]


def expected(x, op):
    """Apply a Pillow function to each image of a batch."""
    return torch.stack([from_pil(op(img)) for img in pil_images(x)])


def codec(img, **kwargs):
    buf = io.BytesIO()
    img.save(buf, **kwargs)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


# -- codecs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("flags", [{}, {"optimize": True, "progressive": True}])
def test_jpeg_equals_pillow_round_trip_bit_for_bit(portraits64, subsampling, flags):
    x = portraits64
    y = JpegCompression(quality=50, subsampling=subsampling, **flags)(x)
    ref = expected(x, lambda im: codec(im, format="JPEG", quality=50, subsampling=subsampling,
                                       **flags))
    assert torch.equal(y, ref)


def test_jpeg_degrades_with_quality_and_subsampling(portraits64):
    x = portraits64[:1]
    errors = [mse(JpegCompression(quality=q)(x), x) for q in (95, 75, 30, 10)]
    assert errors == sorted(errors) and errors[0] > 0
    outs = [JpegCompression(quality=90, subsampling=s)(x) for s in ("4:4:4", "4:2:0")]
    assert mse(outs[0], x) < mse(outs[1], x)


def test_webp_equals_pillow_and_lossless_keeps_pixels(portraits64):
    x = portraits64
    ref = expected(x, lambda im: codec(im, format="WEBP", quality=60, lossless=False, method=4))
    assert torch.equal(WebpCompression(quality=60)(x), ref)
    assert torch.equal(WebpCompression(lossless=True)(x), x)
    assert mse(WebpCompression(quality=10)(x), x) > mse(WebpCompression(quality=90)(x), x)


def test_jpeg_social_draws_dfrap_qualities_per_seed(portraits64):
    t = SocialJpeg()
    draws = [t.quality_for(s) for s in range(4000)]
    assert set(draws) <= set(DFRAP_QUALITIES)
    for q, f in zip(DFRAP_QUALITIES, DFRAP_FREQUENCIES):  # binomial sd <= 0.007 at n = 4000
        assert abs(draws.count(q) / len(draws) - f) < 0.03
    seeds = [11, 12, 13]
    y = t(portraits64, seeds)
    ref = torch.stack([from_pil(codec(img, format="JPEG", quality=t.quality_for(s),
                                      subsampling="4:2:0"))
                       for img, s in zip(pil_images(portraits64), seeds)])
    assert torch.equal(y, ref)
    assert torch.equal(t(portraits64, seeds), y)  # reproducible from the seeds alone
    uniform = SocialJpeg(frequencies=None)
    assert len({uniform.quality_for(s) for s in range(500)}) == len(DFRAP_QUALITIES)


# -- resampling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_resize_pillow_equals_image_resize(portraits64, interpolation):
    x = portraits64
    f = PILLOW_FILTERS[interpolation]
    small = Rescale(factor=0.4, interpolation=interpolation, restore=False)(x)
    assert small.shape[-2:] == (26, 26)
    assert torch.equal(small, expected(x, lambda im: im.resize((26, 26), f)))
    back = Rescale(factor=0.4, interpolation=interpolation)(x)
    assert torch.equal(back, expected(x, lambda im: im.resize((26, 26), f).resize((64, 64), f)))


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_resize_opencv_equals_cv2_resize(portraits64, interpolation):
    import cv2

    flag = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
            "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
            "lanczos": cv2.INTER_LANCZOS4}[interpolation]
    x = portraits64
    y = Rescale(factor=0.5, interpolation=interpolation, library="opencv")(x)
    ref = torch.stack([
        from_uint8(cv2.resize(cv2.resize(to_uint8(xi), (32, 32), interpolation=flag), (64, 64),
                              interpolation=flag))
        for xi in x])
    assert torch.equal(y, ref)


def test_pillow_antialiases_and_opencv_does_not(portraits64):
    """Downscaling a fine checkerboard: Pillow averages it to grey, OpenCV aliases it."""
    board = torch.zeros(1, 3, 64, 64)
    board[..., ::2, ::2] = 1
    board[..., 1::2, 1::2] = 1
    pil = Rescale(factor=0.3, interpolation="bilinear", restore=False)(board)
    cv = Rescale(factor=0.3, interpolation="bilinear", library="opencv", restore=False)(board)
    assert pil.std() < 0.05 < cv.std()
    torch_aa = Rescale(factor=0.3, interpolation="bilinear", library="torch", restore=False)(board)
    torch_no = Rescale(factor=0.3, interpolation="bilinear", library="torch", antialias=False,
                       restore=False)(board)
    assert torch_aa.std() < 0.05 < torch_no.std()


def test_resize_torch_equals_interpolate(portraits64):
    x = portraits64
    y = Rescale(factor=0.5, interpolation="bilinear", library="torch", antialias=False)(x)
    small = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=False)
    ref = torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear")
    assert torch.allclose(y, ref.clamp(0, 1))


# -- quantisation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method,code", [("mediancut", Image.Quantize.MEDIANCUT),
                                         ("maxcoverage", Image.Quantize.MAXCOVERAGE),
                                         ("octree", Image.Quantize.FASTOCTREE)])
def test_quantize_equals_pillow_quantize(portraits64, method, code):
    x = portraits64
    y = PaletteQuantize(colors=16, method=method, kmeans=2)(x)
    assert torch.equal(y, expected(x, lambda im: im.quantize(16, code, 2).convert("RGB")))
    for yi in y:
        assert len(np.unique(to_uint8(yi).reshape(-1, 3), axis=0)) <= 16


def test_quantize_dithering_is_pillows_two_steps(portraits64):
    x = portraits64

    def dithered(im):
        palette = im.quantize(16, Image.Quantize.FASTOCTREE)
        return im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")

    y = PaletteQuantize(colors=16, dither="floyd_steinberg")(x)
    assert torch.equal(y, expected(x, dithered))
    assert not torch.equal(y, PaletteQuantize(colors=16)(x))


@pytest.mark.parametrize("bits", [3, 5, 7])
def test_bit_depth_is_posterize(portraits64, bits):
    x = portraits64
    y = BitDepth(bits=bits)(x)
    assert torch.equal(y, expected(x, lambda im: ImageOps.posterize(im, bits)))
    values = torch.round(y * 255).to(torch.int64)
    assert (values % 2 ** (8 - bits) == 0).all()


def test_bit_depth_dithering_keeps_levels_and_mean(portraits64):
    x = portraits64
    flat = BitDepth(bits=3)(x)
    dithered = BitDepth(bits=3, dither="floyd_steinberg")(x)
    values = torch.round(dithered * 255).to(torch.int64)
    assert (values % 32 == 0).all()
    # Posterize floors (biased dark by ~half a step); error diffusion keeps the local mean.
    assert abs(float((dithered - x).mean())) < abs(float((flat - x).mean())) / 2
    assert BitDepth(bits=8).apply(to_pil(x[0]), 0) is not None
    assert torch.equal(BitDepth(bits=8)(x), x)


def _ycbcr(a):
    """JFIF full-range BT.601, the formula Pillow and libjpeg use."""
    r, g, b = (a[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def test_chroma_subsample_keeps_luma_and_block_averages_chroma(portraits64):
    x = portraits64[:1]
    a = to_uint8(x[0])
    out = to_uint8(ChromaSubsample("4:2:0")(x)[0])
    y_in, cb_in, _ = _ycbcr(a)
    y_out, cb_out, _ = _ycbcr(out)
    assert np.abs(y_out - y_in).mean() < 1.5  # luma untouched (but for 8-bit round trips)
    # The formula: 2x2 block means, upsampled bilinearly (sample centres, edges clamped).
    means = cb_in.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    src = np.clip((np.arange(64) + 0.5) / 2 - 0.5, 0, 31)
    lo, frac = np.floor(src).astype(int), src - np.floor(src)
    hi = np.minimum(lo + 1, 31)
    rows = means[lo] * (1 - frac)[:, None] + means[hi] * frac[:, None]
    ref = rows[:, lo] * (1 - frac)[None] + rows[:, hi] * frac[None]
    assert np.abs(cb_out - ref).mean() < 1.0  # grey levels; the rest is 8-bit rounding
    assert np.abs(cb_in - ref).mean() > 1.0  # the input's fine chroma detail is gone
    e444 = mse(ChromaSubsample("4:4:4")(x), x)
    assert e444 < mse(ChromaSubsample("4:2:2")(x), x) < mse(ChromaSubsample("4:1:0")(x), x)


# -- filters --------------------------------------------------------------------------------------

def test_blur_pillow_and_opencv_equal_their_libraries(portraits64):
    import cv2

    x = portraits64
    assert torch.equal(GaussianBlur(sigma=1.5)(x),
                       expected(x, lambda im: im.filter(ImageFilter.GaussianBlur(1.5))))
    ref = torch.stack([from_uint8(cv2.GaussianBlur(to_uint8(xi), (0, 0), 1.5)) for xi in x])
    assert torch.equal(GaussianBlur(sigma=1.5, library="opencv")(x), ref)
    assert torch.equal(BoxBlur(radius=2)(x),
                       expected(x, lambda im: im.filter(ImageFilter.BoxBlur(2))))
    ref = torch.stack([from_uint8(cv2.blur(to_uint8(xi), (5, 5))) for xi in x])
    assert torch.equal(BoxBlur(radius=2, library="opencv")(x), ref)


def test_blur_matches_the_gaussian_formula(portraits64):
    """Against scipy's exact Gaussian (mirror borders, OpenCV's kernel size): OpenCV's 8-bit
    fixed-point path within 1.5 grey levels (0.3 on average), Pillow's three-box
    approximation within 1 level on average away from its (edge-repeating) borders."""
    from scipy.ndimage import gaussian_filter

    sigma = 1.5
    radius = (round(sigma * 6 + 1) | 1) // 2
    x = portraits64
    exact = torch.stack([
        torch.from_numpy(gaussian_filter(xi.double().numpy() * 255, sigma=(0, sigma, sigma),
                                         mode="mirror", truncate=radius / sigma))
        for xi in x]) / 255
    cv = GaussianBlur(sigma=sigma, library="opencv")(x)
    assert (cv - exact).abs().max() <= 1.5 / 255
    assert (cv - exact).abs().mean() <= 0.3 / 255
    pil = GaussianBlur(sigma=sigma)(x)
    assert (pil - exact)[..., 8:-8, 8:-8].abs().mean() < 1 / 255


def test_median_equals_pillow_and_the_formula(portraits64):
    import cv2
    from scipy.ndimage import median_filter

    x = portraits64
    y = MedianFilter(size=5, library="pillow")(x)
    assert torch.equal(y, expected(x, lambda im: im.filter(ImageFilter.MedianFilter(5))))
    assert torch.equal(MedianFilter(size=5)(x), y)  # OpenCV, the default, agrees everywhere
    a = to_uint8(x[0])
    ref = median_filter(a, size=(5, 5, 1))
    assert np.array_equal(to_uint8(y[0])[2:-2, 2:-2], ref[2:-2, 2:-2])
    cv = to_uint8(MedianFilter(size=5, library="opencv")(x)[0])
    assert np.array_equal(cv, cv2.medianBlur(a, 5))
    assert np.array_equal(cv[2:-2, 2:-2], ref[2:-2, 2:-2])


def test_noise_is_the_seeded_formula(portraits64):
    x = portraits64
    seeds = [5, 6, 7]
    y = GaussianNoise(sigma=0.05)(x, seeds)
    for xi, yi, s in zip(x, y, seeds):
        g = torch.Generator().manual_seed(s)
        assert torch.allclose(yi, (xi + 0.05 * torch.randn(xi.shape, generator=g)).clamp(0, 1))
    assert torch.equal(GaussianNoise(sigma=0.05)(x, seeds), y)
    assert not torch.equal(GaussianNoise(sigma=0.05)(x, [8, 9, 10]), y)
    inside = (y > 0) & (y < 1)
    assert abs(float((y - x)[inside].std()) - 0.05) < 0.005


# -- photometric ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,enhancer", [(Brightness, ImageEnhance.Brightness),
                                          (Contrast, ImageEnhance.Contrast),
                                          (Saturation, ImageEnhance.Color)])
def test_enhancers_equal_pillow(portraits64, cls, enhancer):
    x = portraits64
    assert torch.equal(cls(factor=1.3)(x), expected(x, lambda im: enhancer(im).enhance(1.3)))


def test_photometric_formulas_within_one_grey_level(portraits64):
    x = portraits64
    tol = 1.01 / 255
    assert ((Brightness(factor=1.3)(x) - (x * 1.3).clamp(0, 1)).abs().max() <= tol)
    for xi in x:
        grey = np.asarray(to_pil(xi).convert("L"), dtype=np.float64)
        mean = int(grey.mean() + 0.5) / 255
        ref = (mean + 1.3 * (xi - mean)).clamp(0, 1)
        assert (Contrast(factor=1.3)(xi[None])[0] - ref).abs().max() <= tol
        grey_t = torch.from_numpy(grey).float() / 255
        ref = (grey_t + 0.4 * (xi - grey_t)).clamp(0, 1)
        assert (Saturation(factor=0.4)(xi[None])[0] - ref).abs().max() <= 1.51 / 255
    assert (Gamma(gamma=1.7)(x) - x ** 1.7).abs().max() <= 0.51 / 255
    assert torch.equal(Saturation(factor=0)(x)[:, 0], Saturation(factor=0)(x)[:, 1])


# -- geometry -------------------------------------------------------------------------------------

def test_rotate_pad_equals_pillow(portraits64):
    x = portraits64
    y = Rotate(angle=20)(x)
    ref = expected(x, lambda im: im.rotate(20, resample=Image.Resampling.BICUBIC,
                                           fillcolor=(0, 0, 0)))
    assert torch.equal(y, ref)
    assert (y[..., 0, 0] == 0).all()  # black corner
    quarter = Rotate(angle=90, interpolation="nearest")(x)
    assert torch.equal(quarter, torch.rot90(x, 1, dims=(-2, -1)))


def test_rotate_crop_has_no_black_corners_and_restores_size(portraits64):
    white = torch.ones(1, 3, 64, 64)
    assert Rotate(angle=30)(white).min() == 0  # pad: black corners
    y = Rotate(angle=30, fill="crop")(white)
    assert y.shape == white.shape and y.min() > 0.9
    small = Rotate(angle=30, fill="crop", restore=False)(portraits64)
    assert small.shape[-1] < 64 and small.shape[-1] == small.shape[-2]


def test_crop_center_and_random(portraits64):
    x = portraits64
    y = ResizedCrop(scale=0.5625)(x)  # side 48 of 64
    ref = expected(x, lambda im: im.crop((8, 8, 56, 56)).resize((64, 64),
                                                                Image.Resampling.BILINEAR))
    assert torch.equal(y, ref)
    assert ResizedCrop(scale=0.5625, restore=False)(x).shape[-2:] == (48, 48)
    t = ResizedCrop(scale=0.25, position="random")
    boxes = {t.box(64, 64, s) for s in range(20)}
    assert len(boxes) > 5 and all(b[2] - b[0] == 32 for b in boxes)
    assert torch.equal(t(x, [1, 2, 3]), t(x, [1, 2, 3]))


# -- pipelines ------------------------------------------------------------------------------------

def test_display_capture_is_down_save_up(portraits64):
    x = portraits64
    y = DisplayCapture(scale=0.5, save="jpeg", quality=80)(x)

    def ref(im):
        shown = im.resize((32, 32), Image.Resampling.BILINEAR)
        shown = codec(shown, format="JPEG", quality=80, subsampling="4:2:0")
        return shown.resize((64, 64), Image.Resampling.BICUBIC)

    assert torch.equal(y, expected(x, ref))
    assert mse(y, x) > mse(DisplayCapture(scale=0.5)(x), x)


def test_platform_caps_the_longest_side_then_jpeg(portraits64):
    x = portraits64

    def ref(im):
        small = im.copy()
        small.thumbnail((32, 32), Image.Resampling.BICUBIC)
        return codec(small, format="JPEG", quality=85, subsampling="4:2:0")

    kept = PlatformUpload(max_side=32, restore=False)(x)
    assert kept.shape[-2:] == (32, 32)
    assert torch.equal(kept, expected(x, ref))
    back = PlatformUpload(max_side=32)(x)
    assert back.shape == x.shape
    assert torch.equal(back, expected(x, lambda im: ref(im).resize((64, 64),
                                                                  Image.Resampling.BICUBIC)))
    # Under the cap only the JPEG re-encoding happens.
    assert torch.equal(PlatformUpload(max_side=1080)(x), JpegCompression(quality=85)(x))


def test_identity_returns_its_input(portraits64):
    assert Identity()(portraits64) is portraits64
