import io

import numpy as np
import torch
from PIL import Image

from benchmark.images import from_pil, to_pil
from benchmark.transforms.base import Identity
from benchmark.transforms.jpeg import JpegCompression
from benchmark.transforms.resize import Rescale


def mse(a, b):
    return float(((a - b) ** 2).mean())


def test_jpeg_matches_pillow_and_degrades_with_quality(portraits64):
    x = portraits64[:1]
    buf = io.BytesIO()
    to_pil(x[0]).save(buf, format="JPEG", quality=50, subsampling="4:2:0")
    expected = from_pil(Image.open(io.BytesIO(buf.getvalue())))
    assert torch.equal(JpegCompression(quality=50)(x)[0], expected)
    errors = [mse(JpegCompression(quality=q)(x), x) for q in (95, 75, 30, 10)]
    assert errors == sorted(errors) and errors[0] > 0


def test_jpeg_chroma_subsampling_options_differ(portraits64):
    x = portraits64[:1]
    outs = [JpegCompression(quality=90, subsampling=s)(x) for s in ("4:4:4", "4:2:2", "4:2:0")]
    assert mse(outs[0], x) < mse(outs[2], x)


def test_resize_restores_the_size_and_loses_detail(portraits64):
    x = portraits64
    y = Rescale(factor=0.5, interpolation="bicubic")(x)
    assert y.shape == x.shape and mse(y, x) > 0
    assert mse(Rescale(factor=0.25)(x), x) > mse(Rescale(factor=0.75)(x), x)
    small = Rescale(factor=0.5, restore=False)(x)
    assert small.shape[-2:] == (32, 32)
    expected = np.asarray(to_pil(x[0]).resize((32, 32), Image.Resampling.BICUBIC))
    assert torch.equal(small[0], from_pil(Image.fromarray(expected)))


def test_identity_returns_its_input(portraits64):
    assert Identity()(portraits64) is portraits64
