"""The ArcFace option of `ism`: IResNet layout, five-point alignment, weights handling, end to end.

No ArcFace weights exist offline: the code path runs on randomly initialised
checkpoints written to tmp; the identity check with real weights is marked
`weights` and reads BENCH_ARCFACE_WEIGHTS (an arcface_torch backbone.pth).
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, bench

from benchmark.data.portraits import PortraitsDataset
from benchmark.errors import ConfigValueError
from benchmark.images import to_uint8
from benchmark.metrics.face import FDFR, ISM
from benchmark.models.arcface import ArcFaceEmbedder, load_state
from benchmark.models.face_align import TEMPLATE_112, align_crop, similarity_transform
from benchmark.models.face_detection import FaceDetector
from benchmark.models.iresnet import IResNet, arch_of

OBAMA = ("obama-1", "obama-2", "obama-3")
REAL_WEIGHTS = os.environ.get("BENCH_ARCFACE_WEIGHTS", "")


def random_checkpoint(path: Path, arch: str = "r50", seed: int = 0) -> Path:
    """An arcface_torch-style backbone.pth with random weights (plumbing only)."""
    torch.manual_seed(seed)
    torch.save(IResNet(arch).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def r50_weights(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("arcface") / "backbone.pth")


@pytest.fixture(scope="module")
def portraits128():
    d = PortraitsDataset(resolution=128)
    samples = [d.load(i) for i in range(len(d))]
    return [s.image_id for s in samples], torch.stack([s.x for s in samples])


# -- the network ----------------------------------------------------------------------------------

def test_iresnet50_maps_112px_faces_to_512_d_embeddings():
    torch.manual_seed(0)
    net = IResNet("r50").eval()
    with torch.no_grad():
        y = net(torch.rand(3, 3, 112, 112) * 2 - 1)
    assert y.shape == (3, 512) and torch.isfinite(y).all()
    assert not torch.allclose(y[0], y[1])  # depends on the input
    with pytest.raises(ValueError, match="arch"):
        IResNet("r152")


def expected_keys(blocks: tuple[int, ...]) -> set[str]:
    """arcface_torch's parameter names, spelled out from its layout (not from our module)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "prelu.weight", "fc.weight", "fc.bias"}
    keys |= {f"{m}.{p}" for m in ("bn1", "bn2", "features") for p in bn}
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            block = f"layer{stage}.{b}"
            keys |= {f"{block}.conv1.weight", f"{block}.conv2.weight", f"{block}.prelu.weight"}
            keys |= {f"{block}.{m}.{p}" for m in ("bn1", "bn2", "bn3") for p in bn}
            if b == 0:
                keys |= {f"{block}.downsample.0.weight"}
                keys |= {f"{block}.downsample.1.{p}" for p in bn}
    return keys


@pytest.mark.parametrize("arch,blocks,count", [("r50", (3, 4, 14, 3), 475),
                                               ("r100", (3, 13, 30, 3), 925)])
def test_state_dict_names_are_those_of_arcface_torch_checkpoints(arch, blocks, count):
    state = IResNet(arch).state_dict()
    assert set(state) == expected_keys(blocks) and len(state) == count
    shapes = {"conv1.weight": (64, 3, 3, 3), "layer1.0.bn1.weight": (64,),
              "layer1.0.conv1.weight": (64, 64, 3, 3),
              "layer2.0.downsample.0.weight": (128, 64, 1, 1),
              "layer4.0.conv2.weight": (512, 512, 3, 3), "layer4.2.prelu.weight": (512,),
              "bn2.running_var": (512,), "fc.weight": (512, 512 * 7 * 7), "fc.bias": (512,),
              "features.weight": (512,)}
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert arch_of(state) == arch
    # r100 has 65.2M parameters, r50 43.6M (arcface_torch's model zoo figures)
    millions = sum(p.numel() for p in IResNet(arch).parameters()) / 1e6
    assert round(millions, 1) == {"r50": 43.6, "r100": 65.2}[arch]


def test_checkpoints_load_safely_and_a_wrong_arch_is_refused(tmp_path):
    torch.manual_seed(1)
    state = IResNet("r50").state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    loaded = load_state(tmp_path / "ddp.pth")  # a DDP save's prefix is dropped
    assert set(loaded) == set(state) and torch.equal(loaded["fc.weight"], state["fc.weight"])
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "b.safetensors"))
    safe = load_state(tmp_path / "b.safetensors")
    assert torch.equal(safe["conv1.weight"], state["conv1.weight"])
    with pytest.raises(ConfigValueError, match="arch='r100'.*'r50'"):
        ISM(backbone="arcface", arch="r100", weights=str(tmp_path / "ddp.pth"))
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(Exception, match="not an arcface_torch IResNet checkpoint"):
        ISM(backbone="arcface", arch="r50", weights=str(tmp_path / "other.pth"))


# -- alignment ------------------------------------------------------------------------------------

def test_umeyama_recovers_a_known_rotation_scale_and_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    angle, scale, shift = math.radians(23), 0.61, np.array([-40.0, 17.5])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    matrix = similarity_transform(src, dst)
    assert np.allclose(matrix, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    # With noise, least squares stays close; mirrored points still give a proper rotation.
    noisy = similarity_transform(src, dst + rng.normal(0, 0.5, dst.shape))
    assert np.allclose(noisy[:, :2], matrix[:, :2], atol=0.01)
    assert np.abs(src @ noisy[:, :2].T + noisy[:, 2] - dst).max() < 1.5
    mirrored = similarity_transform(src * np.array([-1.0, 1.0]), dst)
    assert np.linalg.det(mirrored[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), dst)


def bilinear(image: np.ndarray, x: float, y: float) -> np.ndarray:
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def test_the_warp_sends_the_five_points_onto_the_template():
    # A face seen rotated, scaled and shifted: its five points are the template's, moved.
    angle, scale, shift = math.radians(-15), 2.3, np.array([60.0, 35.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = scale * TEMPLATE_112 @ rotation.T + shift
    # Each pixel holds its own coordinates: the crop then says where it was sampled from.
    ys, xs = np.mgrid[0:400, 0:400].astype(np.float32)
    coords = np.dstack([xs, ys, np.zeros_like(xs)])
    crop = align_crop(coords, points)
    assert crop.shape == (112, 112, 3)
    for (tx, ty), source in zip(TEMPLATE_112, points):
        assert np.allclose(bilinear(crop, tx, ty)[:2], source, atol=1e-2)


def test_aligned_portraits_put_the_eyes_on_the_template(portraits128):
    _, x = portraits128
    embedder = ArcFaceEmbedder("unused.pth", "r50", detector="hog")
    detector = FaceDetector("hog", 256)
    for xi in x:
        image = np.ascontiguousarray(to_uint8(xi))
        points = embedder.five_points(image, embedder.detector.detect(image)[0])
        matrix = similarity_transform(points, TEMPLATE_112)
        moved = points @ matrix[:, :2].T + matrix[:, 2]
        assert (np.linalg.norm(moved[:2] - TEMPLATE_112[:2], axis=1) < 6).all()
        # Found again in the aligned crop (at 2x, with a margin), the eyes sit on the template.
        canvas = np.zeros((448, 448, 3), np.uint8)
        canvas[112:336, 112:336] = align_crop(image, points, 224)
        box = detector.detect(canvas)[0]
        again = (embedder.five_points(canvas, box) - 112) / 2
        assert (np.linalg.norm(again[:2] - TEMPLATE_112[:2], axis=1) < 6).all()


# -- the metric -----------------------------------------------------------------------------------

def test_arcface_ism_on_the_portraits_with_a_random_checkpoint(portraits128, r50_weights, caplog):
    ids, x = portraits128
    metric = ISM(backbone="arcface", arch="r50", weights=str(r50_weights), detector="hog",
                 device="cpu")
    assert metric.available
    emb = metric.embedder(x)
    assert emb.shape == (len(ids), 513)
    assert (emb[:, 0] == 1).all() and torch.isfinite(emb[:, 1:]).all()
    n = len(ids)
    ism = metric.update(emb.repeat_interleave(n, 0), emb.repeat(n, 1)).view(n, n)
    assert ((ism >= -1) & (ism <= 1)).all()
    assert torch.allclose(ism.diagonal(), torch.ones(n, dtype=torch.float64))
    assert not torch.allclose(ism, torch.ones_like(ism))  # random weights still tell images apart
    blank = metric.embedder(torch.full((1, 3, 128, 128), 0.5))
    assert blank[0, 0] == 0 and torch.isnan(blank[0, 1:]).all()
    assert math.isnan(metric.update(blank, emb[:1])[0].item())  # no face: no value, not 0


def test_ism_options_and_what_identifies_its_embeddings(tmp_path, r50_weights):
    for bad in ({"backbone": "retinaface"}, {"arch": "r152"}, {"weights": ""},
                {"backbone": "arcface", "detector": "mtcnn", "weights": str(r50_weights)}):
        with pytest.raises(ConfigValueError):
            ISM(**bad)
    dlib = ISM(detector="hog")
    assert dlib.embedder_config == FDFR(detector="hog").embedder_config  # unchanged, shared
    a = ISM(backbone="arcface", arch="r50", weights=str(r50_weights), detector="hog")
    copy = tmp_path / "copy.pth"
    copy.write_bytes(Path(r50_weights).read_bytes())
    same = ISM(backbone="arcface", arch="r50", weights=str(copy), detector="hog")
    other = ISM(backbone="arcface", arch="r50", detector="hog",
                weights=str(random_checkpoint(tmp_path / "other.pth", seed=1)))
    assert a.embedder_config != dlib.embedder_config
    assert a.embedder_config == same.embedder_config and a.version == same.version  # by content
    assert a.embedder_config != other.embedder_config and a.version != other.version
    assert a.version != dlib.version


def test_arcface_without_weights_is_unavailable_and_says_how_to_get_them(tmp_path, monkeypatch):
    unset = ISM(backbone="arcface")
    assert not unset.available and unset.embedder is None
    assert "metric.ism.weights" in unset.unavailable_reason
    assert "backbone.pth" in unset.unavailable_reason
    missing = ISM(backbone="arcface", weights=str(tmp_path / "nowhere" / "backbone.pth"))
    assert not missing.available
    assert str(tmp_path / "nowhere" / "backbone.pth") in missing.unavailable_reason
    hub = ISM(backbone="arcface", weights="someone/arcface-r100/backbone.pth")
    assert not hub.available
    assert "`hf download someone/arcface-r100 backbone.pth`" in hub.unavailable_reason
    # owner/repo/file resolves through the local Hugging Face cache only
    cached = random_checkpoint(tmp_path / "cached.pth")
    from benchmark.models import hub as hub_module

    monkeypatch.setattr(hub_module, "cached_file",
                        lambda repo, name: str(cached) if (repo, name) == (
                            "someone/arcface-r50", "ms1mv3/backbone.pth") else None)
    found = ISM(backbone="arcface", arch="r50", weights="someone/arcface-r50/ms1mv3/backbone.pth")
    assert found.available and found.embedder.weights == cached


# -- through `bench run` --------------------------------------------------------------------------

RUN = [*TINY, "dataset.resolution=128", "defense=none", "transform=jpeg", "device=cpu",
       "metric.ism.detector=hog", "metric.fdfr.detector=hog"]


def test_bench_run_writes_arcface_ism_rows_apart_from_dlib_embeddings(workdir):
    weights = random_checkpoint(workdir / "backbone.pth")
    bench("run", *RUN, "metric=[ism,fdfr]", "hydra.run.dir=dlib", cwd=workdir)
    bench("run", *RUN, "metric=[ism,fdfr]", "metric.ism.backbone=arcface", "metric.ism.arch=r50",
          f"metric.ism.weights={weights}", "hydra.run.dir=arcface", cwd=workdir)
    dlib, arc = (pd.read_csv(workdir / d / "samples.csv", dtype={"image_id": str})
                 for d in ("dlib", "arcface"))
    ism = arc[arc.metric == "ism"]
    assert len(ism) == 6 and set(ism.pair) == {"fidelity", "invisibility"}
    assert ism["value"].between(-1, 1).all()
    assert (ism[ism.pair == "invisibility"]["value"] == 1).all()  # no defense: x_adv = x
    assert (arc[arc.metric == "fdfr"]["value"] == 0).all()
    # The dlib run cached 129-d embeddings of the same images; ArcFace computed its own.
    embed = json.loads((workdir / "arcface" / "stats.json").read_text())["stages"]["embed"]
    assert embed["computed"] > 0
    by = ["pair", "image_id"]
    merged = dlib[dlib.metric == "ism"].merge(ism, on=by, suffixes=("_dlib", "_arc"))
    fidelity = merged[merged.pair == "fidelity"]
    assert len(fidelity) == 3 and (fidelity.value_dlib != fidelity.value_arc).all()


def test_bench_run_without_arcface_weights_stops_or_with_the_opt_in_warns_once(workdir):
    missing = workdir / "weights" / "backbone.pth"
    refused = bench("run", *RUN, "metric=[psnr,ism,fdfr]", "metric.ism.backbone=arcface",
                    f"metric.ism.weights={missing}", "hydra.run.dir=refused", cwd=workdir,
                    check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert str(missing) in refused.stderr and "skip_unavailable_metrics=true" in refused.stderr
    assert not (workdir / "refused" / "samples.csv").exists()
    proc = bench("run", *RUN, "metric=[psnr,ism,fdfr]", "metric.ism.backbone=arcface",
                 f"metric.ism.weights={missing}", "hydra.run.dir=out",
                 "skip_unavailable_metrics=true", cwd=workdir)
    samples = pd.read_csv(workdir / "out" / "samples.csv", dtype={"image_id": str})
    assert "ism" not in set(samples.metric)  # never a made-up number
    assert (samples.metric == "psnr").sum() == 6 and (samples.metric == "fdfr").sum() == 6
    warnings = [line for line in proc.stderr.splitlines() if "metric ism is unavailable" in line]
    assert len(warnings) == 1 and str(missing) in warnings[0], proc.stderr


# -- with real weights ----------------------------------------------------------------------------

@pytest.mark.weights
@pytest.mark.skipif(not Path(REAL_WEIGHTS).is_file(),
                    reason="no ArcFace weights: set BENCH_ARCFACE_WEIGHTS to an arcface_torch "
                           "backbone.pth (e.g. ms1mv3_arcface_r100_fp16)")
def test_real_arcface_matches_the_three_obama_photos_and_not_other_people():
    d = PortraitsDataset(resolution=256)
    samples = [d.load(i) for i in range(len(d))]
    ids = [s.image_id for s in samples]
    arch = arch_of(load_state(Path(REAL_WEIGHTS)))
    metric = ISM(backbone="arcface", arch=arch, weights=REAL_WEIGHTS, detector="hog")
    emb = metric.embedder(torch.stack([s.x for s in samples]))
    assert (emb[:, 0] >= 1).all()
    n = len(ids)
    ism = metric.update(emb.repeat_interleave(n, 0), emb.repeat(n, 1)).view(n, n).numpy()
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    same = [ism[i, j] for i, j in pairs if ids[i] in OBAMA and ids[j] in OBAMA]
    different = [ism[i, j] for i, j in pairs if (ids[i] in OBAMA) + (ids[j] in OBAMA) < 2]
    assert len(same) == 3 and len(different) == 18
    assert min(same) > max(different)
