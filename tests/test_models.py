"""The model layer: built-in random models, sharing, local folders, the HF cache, safe loading."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import bench

from benchmark.errors import BenchError, MissingModelError
from benchmark.models import diffusion, hub, tiny
from benchmark.models.encoders import SDVaeEncoder
from benchmark.models.face_detection import FaceDetector
from benchmark.paths import config_dir

# The file listing of stable-diffusion-v1-5/stable-diffusion-v1-5 on the Hub.
SD15_FILES = [
    ".gitattributes", "README.md", "model_index.json",
    "feature_extractor/preprocessor_config.json", "safety_checker/config.json",
    "safety_checker/model.fp16.safetensors", "safety_checker/model.safetensors",
    "safety_checker/pytorch_model.bin", "safety_checker/pytorch_model.fp16.bin",
    "scheduler/scheduler_config.json", "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors", "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_pytorch_model.non_ema.safetensors",
    "unet/diffusion_pytorch_model.safetensors", "v1-5-pruned-emaonly.ckpt",
    "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.fp16.bin",
    "vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors",
]


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_tiny_models_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = tiny.tiny_unet("tiny/sd")
    assert torch.equal(torch.rand(3), expected)
    b = tiny.tiny_unet("tiny/sd")
    assert all(torch.equal(p, q) for p, q in zip(params(a), params(b)))
    inpaint = tiny.tiny_unet("tiny/sd-inpaint")
    assert (a.config.in_channels, inpaint.config.in_channels,
            tiny.tiny_unet("tiny/instruct-pix2pix").config.in_channels) == (4, 9, 8)
    with pytest.raises(BenchError, match="tiny/sd-inpaint"):
        tiny.tiny_unet("tiny/nope")


def test_tiny_tokenizer_and_text_encoder():
    tok = tiny.tiny_tokenizer()
    ids = tok(["a photo of a person", "hi"], padding="max_length", max_length=77,
              truncation=True, return_tensors="pt").input_ids
    vocab = tiny.tiny_vocabulary()
    assert ids.shape == (2, 77)
    assert ids[0, 0] == vocab[tiny.BOS] and ids.max() < 1000
    # no merges: every character is its own token ("hi" -> h, i</w>, then end and padding)
    assert ids[1, 1:4].tolist() == [vocab["h"], vocab["i</w>"], vocab[tiny.EOS]]
    assert tok.decode(ids[0], skip_special_tokens=True) == "a photo of a person"
    hidden = tiny.tiny_text_encoder()(ids)[0]
    assert hidden.shape == (2, 77, 32) and torch.isfinite(hidden).all()
    assert not torch.allclose(hidden[0], hidden[1])


def test_components_are_shared_within_the_process():
    parts = diffusion.load_sd_components("tiny/sd", "fp32", "cpu")
    again = diffusion.load_sd_components("tiny/sd", "fp32", "cpu")
    assert parts.vae is again.vae and parts.unet is again.unet
    assert parts.text_encoder is again.text_encoder and parts.tokenizer is again.tokenizer
    assert SDVaeEncoder(model="tiny/sd", device="cpu").vae is parts.vae
    assert diffusion.load_vae("tiny/sd", "fp32", "cpu") is parts.vae
    assert diffusion.load_sd_components("tiny/sd", "bf16", "cpu").vae is not parts.vae
    assert diffusion.load_sd_components("tiny/sd-inpaint", "fp32", "cpu").unet is not parts.unet
    assert not any(p.requires_grad for p in parts.unet.parameters())
    assert not parts.vae.training and parts.vae_scale_factor == 2


def test_schedulers_are_new_instances_with_the_models_betas():
    parts = diffusion.load_sd_components("tiny/sd", "fp32", "cpu")
    first, second = parts.scheduler, parts.scheduler
    assert first is not second and type(first).__name__ == "PNDMScheduler"
    euler = parts.make_scheduler("euler_a")
    assert type(euler).__name__ == "EulerAncestralDiscreteScheduler"
    assert torch.allclose(euler.alphas_cumprod, first.alphas_cumprod)
    assert float(first.betas[0]) == pytest.approx(0.00085)
    with pytest.raises(BenchError, match="scheduler"):
        parts.make_scheduler("nope")


def test_encoder_gradients_flow_to_the_input():
    enc = SDVaeEncoder(model="tiny/sd", device="cpu")
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    z = enc(x)
    assert z.shape == (2, 4, 32, 32)
    z.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_local_diffusers_folder_loads_through_from_pretrained(tmp_path):
    folder = tmp_path / "sd"
    tiny.save_tiny("tiny/sd", folder)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.rglob("*.bin"))
    hub.require_parts(str(folder))
    assert hub.local_status(str(folder))[0] == "present"
    parts = diffusion.load_sd_components(str(folder), "fp32", "cpu")
    assert all(torch.equal(p, q) for p, q in zip(params(parts.unet), params(tiny.tiny_unet())))
    assert parts.tokenizer("a b").input_ids == tiny.tiny_tokenizer()("a b").input_ids
    assert type(parts.scheduler).__name__ == "PNDMScheduler"

    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    status, detail = hub.local_status(str(folder))
    assert status == "incomplete" and "unet" in detail
    (folder / "unet" / "config.json").unlink()
    with pytest.raises(MissingModelError, match="missing parts: unet"):
        hub.require_parts(str(folder))


def test_missing_model_names_the_id_and_the_ways_to_provide_it(tmp_path):
    with pytest.raises(MissingModelError) as e:
        hub.require_parts("nobody/no-such-model")
    text = str(e.value)
    assert "nobody/no-such-model" in text and hub.hub_cache_dir() in text
    assert "HF_HOME" in text and "local directory" in text
    with pytest.raises(MissingModelError, match=str(tmp_path / "absent")):
        hub.require_parts(str(tmp_path / "absent"))
    assert hub.local_status("nobody/no-such-model")[0] == "missing"


def test_hub_cache_layout_is_found_offline(tmp_path):
    """A repository in a Hugging Face cache loads by id, with no network, and checks as present."""
    cache = tmp_path / "hub"
    commit = "0" * 40
    repo = cache / "models--bench-test--tiny-sd"
    tiny.save_tiny("tiny/sd", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    code = ("import torch; from benchmark.models import diffusion, hub, tiny;"
            "p = diffusion.load_sd_components('bench-test/tiny-sd', 'fp32', 'cpu');"
            "print(all(torch.equal(a, b) for a, b in zip(p.vae.parameters(),"
            " tiny.tiny_vae().parameters())));"
            "print(hub.local_status('bench-test/tiny-sd')[0]);"
            "print(hub.local_status('nobody/absent')[0])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.stdout.split() == ["True", "present", "missing"], out.stderr[-2000:]


def test_select_files_prefers_safetensors_and_skips_pickled_checkpoints():
    chosen = hub.select_files(SD15_FILES)
    assert chosen == sorted([
        "model_index.json", "feature_extractor/preprocessor_config.json",
        "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.safetensors", "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors"])
    clip = ["config.json", "flax_model.msgpack", "merges.txt", "model.safetensors",
            "pytorch_model.bin", "tf_model.h5", "tokenizer.json", "vocab.json", "README.md"]
    assert hub.select_files(clip) == ["config.json", "merges.txt", "model.safetensors",
                                      "tokenizer.json", "vocab.json"]
    old = ["config.json", "pytorch_model.bin", "model.ckpt"]
    assert hub.select_files(old) == ["config.json", "pytorch_model.bin"]
    assert hub.select_files(SD15_FILES, everything=True) == sorted(SD15_FILES)


def test_pull_refuses_offline_and_builtin_ids(monkeypatch):
    with pytest.raises(BenchError, match="built in"):
        hub.pull("tiny/sd")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BenchError, match="HF_HUB_OFFLINE"):
        hub.pull("stable-diffusion-v1-5/stable-diffusion-v1-5")


class Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_load_checkpoint_refuses_pickled_code(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.arange(4.0)}
    save_file(state, tmp_path / "a.safetensors")
    torch.save(state, tmp_path / "b.pt")
    assert torch.equal(hub.load_checkpoint(tmp_path / "a.safetensors")["w"], state["w"])
    assert torch.equal(hub.load_checkpoint(tmp_path / "b.pt")["w"], state["w"])
    torch.save({"w": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(BenchError, match="refusing"):
        hub.load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(MissingModelError):
        hub.load_checkpoint(tmp_path / "absent.safetensors")


def test_configured_models_lists_the_real_ids():
    models = hub.configured_models(config_dir())
    assert "generator/sd_img2img.yaml" in models["stable-diffusion-v1-5/stable-diffusion-v1-5"]
    assert "encoder/sd_vae.yaml" in models["stable-diffusion-v1-5/stable-diffusion-v1-5"]
    inpainting = models["stable-diffusion-v1-5/stable-diffusion-inpainting"]
    assert "generator/sd_inpaint.yaml" in inpainting
    assert "generator/instruct_pix2pix.yaml" in models["timbrooks/instruct-pix2pix"]
    assert "tiny/sd" in models


def test_weights_check_command(workdir, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(workdir / "empty-hub"))
    proc = bench("weights", "check", cwd=workdir, check=False)
    assert proc.returncode == 1  # some configured model is not usable offline
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "missing" in lines["timbrooks/instruct-pix2pix"]
    assert "built-in" in lines["tiny/sd"] and "random weights" in lines["tiny/sd"]
    assert "bench weights pull ID" in proc.stdout


def test_face_detector_finds_the_portrait_faces(portraits64):
    detector = FaceDetector()
    for image in portraits64:
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        boxes = detector.detect(pixels)
        assert boxes, "no face found in a shipped portrait"
        b = boxes[0]
        assert 0 <= b.left < b.right <= 64 + 8 and 0 <= b.top < b.bottom <= 64 + 8
        assert 16 < (b.left + b.right) / 2 < 48  # the crops are centred on the face
    assert detector.detect(np.full((64, 64, 3), 128, np.uint8)) == []


def test_model_index_of_a_saved_tiny_model_is_labelled(tmp_path):
    tiny.save_tiny("tiny/sd-inpaint", tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert "random weights" in index["_bench_notice"]
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["in_channels"] == 9
