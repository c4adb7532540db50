"""The loader turns any common image file into 8-bit RGB without clipping or losing its size."""

import numpy as np
import pytest
from PIL import Image

from benchmark.data.folder import FolderDataset
from benchmark.errors import UnreadableImageError
from benchmark.images import read_image


def gradient(width, height, dtype=np.uint8, top=255):
    ramp = np.linspace(0, top, width * height).reshape(height, width)
    return np.round(ramp).astype(dtype)


def test_odd_size_rgb_keeps_its_size_and_pixels(tmp_path):
    a = np.stack([gradient(511, 383), gradient(511, 383)[::-1], np.full((383, 511), 7)], -1)
    Image.fromarray(a.astype(np.uint8)).save(tmp_path / "odd.png")
    img = read_image(tmp_path / "odd.png")
    assert img.mode == "RGB" and img.size == (511, 383)
    assert np.array_equal(np.asarray(img), a)


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    a = gradient(63, 47)
    Image.fromarray(a, mode="L").save(tmp_path / "grey.png")
    out = np.asarray(read_image(tmp_path / "grey.png"))
    assert out.shape == (47, 63, 3)
    assert all(np.array_equal(out[..., c], a) for c in range(3))


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a16 = gradient(64, 48, np.uint16, 65535)
    Image.fromarray(a16).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as raw:
        assert raw.mode.startswith("I")  # what makes the plain convert("RGB") clip
    out = np.asarray(read_image(tmp_path / "grey16.png")).astype(int)
    expected = np.round(a16 / 257).astype(int)
    assert np.array_equal(out[..., 0], expected)
    assert out.min() == 0 and out.max() == 255
    assert abs(out.mean() - 127.5) < 1  # Pillow's clipping would give a mean near 255


def test_16_bit_rgb_png_is_reduced_to_8_bits(tmp_path):
    import cv2

    a16 = np.stack([gradient(40, 30, np.uint16, 65535)] * 3, -1)
    a16[..., 2] //= 2
    cv2.imwrite(str(tmp_path / "rgb16.png"), a16[..., ::-1])  # OpenCV writes BGR
    out = np.asarray(read_image(tmp_path / "rgb16.png")).astype(int)
    assert np.abs(out - a16 / 257).max() <= 1  # Pillow keeps the high byte


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((20, 30, 4), np.uint8)
    a[..., 0] = 200  # red everywhere
    a[:, :15, 3] = 255  # left half opaque
    a[:, 15:, 3] = 0  # right half transparent
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(read_image(tmp_path / "rgba.png")).astype(int)
    assert (out[:, :15] == [200, 0, 0]).all()
    assert (out[:, 15:] == [255, 255, 255]).all()


def test_half_transparent_grey_blends_with_white(tmp_path):
    a = np.zeros((8, 8, 2), np.uint8)
    a[..., 1] = 128  # black at alpha 128/255
    Image.fromarray(a, mode="LA").save(tmp_path / "la.png")
    out = np.asarray(read_image(tmp_path / "la.png")).astype(int)
    assert np.abs(out - 255 * (1 - 128 / 255)).max() <= 1


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (10, 10), 1)
    img.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
    img.info["transparency"] = 1
    img.save(tmp_path / "p.png", transparency=1)
    out = np.asarray(read_image(tmp_path / "p.png"))
    assert (out == 255).all()


def test_cmyk_jpeg_is_converted(tmp_path):
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    out = np.asarray(read_image(tmp_path / "cmyk.jpg")).astype(int)
    assert out.shape == (12, 16, 3) and out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(gradient(40, 20), mode="L").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise on display
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    assert read_image(tmp_path / "o.jpg").size == (20, 40)


def test_a_dataset_of_odd_inputs_loads_square_rgb_tensors(tmp_path):
    Image.fromarray(gradient(511, 383, np.uint16, 65535)).save(tmp_path / "a16.png")
    Image.fromarray(gradient(383, 511), mode="L").save(tmp_path / "b.png")
    Image.new("RGBA", (100, 60), (10, 20, 30, 0)).save(tmp_path / "c.png")
    d = FolderDataset(root=str(tmp_path), resolution=64)
    for i in range(len(d)):
        x = d.load(i).x
        assert x.shape == (3, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert d.load(0).x.max() > 0.9  # the 16-bit ramp keeps its range


def test_unreadable_file_names_its_path(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match="bad.png"):
        read_image(tmp_path / "bad.png")
