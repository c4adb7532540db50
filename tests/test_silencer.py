"""Silencer-I, the talking-head generator, per-image audio and per-frame scoring.

The attack runs on the random-weight tiny/talking-head with frozen noise streams, so its
objective is a deterministic function: it must end below the clean image and below
uniform noise of the same size, keep its 16/255 budget after 8-bit release, and fail
that check with the PGD step's sign flipped. Audio routing is checked through `bench run`
on a folder dataset with one clip per image; per-frame metrics against a hand computation.
"""

import csv
import json
import math
import os
import struct
import wave
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import bench

from benchmark.data.audio import read_wav, sample_audio_path
from benchmark.data.folder import FolderDataset
from benchmark.defenses.silencer import SilencerI
from benchmark.errors import BenchError
from benchmark.generators.talking_head import TalkingHeadGenerator
from benchmark.images import generator_for, release, to_pil
from benchmark.metrics.base import Metric
from benchmark.metrics.pixel import PSNR
from benchmark.models.sd_ops import NoiseStreams
from benchmark.video import PerFrameMetric, tile, untile

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [5, 6]


def write_wav(path: Path, values: list[float], rate: int = 16000, width: int = 2) -> None:
    scale = (1 << (8 * width - 1)) - 1
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(width)
        f.setframerate(rate)
        if width == 1:
            f.writeframes(bytes(round(v * 127) + 128 for v in values))
        else:
            f.writeframes(struct.pack(f"<{len(values)}h", *(round(v * scale) for v in values)))


def tone(hz: float, seconds: float = 0.3, rate: int = 16000) -> list[float]:
    return [0.5 * math.sin(2 * math.pi * hz * i / rate) for i in range(int(seconds * rate))]


# -- audio files ---------------------------------------------------------------------------------


def test_wav_reader_returns_the_written_samples(tmp_path):
    values = [0.0, 0.5, -0.5, 0.25, -1.0]
    write_wav(tmp_path / "a.wav", values)
    write_wav(tmp_path / "b.wav", values, rate=8000, width=1)
    a, b = read_wav(tmp_path / "a.wav"), read_wav(tmp_path / "b.wav")
    assert a.rate == 16000 and b.rate == 8000
    assert torch.allclose(a.samples, torch.tensor(values), atol=1 / 32767)
    assert torch.allclose(b.samples, torch.tensor(values), atol=1 / 127)
    assert a.key != b.key
    shipped = read_wav(sample_audio_path())
    assert shipped.rate == 16000 and 1 <= shipped.seconds <= 2
    assert sample_audio_path().stat().st_size < 100_000


def test_a_missing_clip_is_named_before_any_compute(tmp_path):
    for name in ("a", "b"):
        to_pil(torch.rand(3, 8, 8)).save(tmp_path / f"{name}.png")
    clips = tmp_path / "clips"
    clips.mkdir()
    write_wav(clips / "a.wav", tone(200))
    dataset = FolderDataset(str(tmp_path), resolution=8, audio=str(clips))
    with pytest.raises(BenchError, match="b.wav"):
        dataset.check_audio()


def test_hallo_without_a_checkout_says_how_to_set_it_up(tmp_path):
    with pytest.raises(BenchError, match="hallo_root"):
        TalkingHeadGenerator(model="hallo", hallo_root=None)
    (tmp_path / "hallo" / "models").mkdir(parents=True)
    (tmp_path / "hallo" / "models" / "unet_3d.py").write_text("")
    with pytest.raises(BenchError, match="net.pth"):
        SilencerI(model="hallo", hallo_root=str(tmp_path))
    with pytest.raises(BenchError, match="min_timestep"):
        SilencerI(model="tiny/talking-head", min_timestep=1000)


# -- per-frame scoring ---------------------------------------------------------------------------


def test_strip_layout_puts_frames_side_by_side_in_order():
    frames = torch.rand(2, 3, 3, 4, 4)
    strip = tile(frames)
    assert strip.shape == (2, 3, 4, 12)
    assert torch.equal(strip[..., 4:8], frames[:, 1])
    assert torch.equal(untile(strip, 3), frames)


def test_per_frame_psnr_is_the_mean_of_each_frames_psnr():
    a = torch.rand(2, 3, 3, 16, 16, generator=generator_for(1))
    b = (a + 0.05 * torch.randn(a.shape, generator=generator_for(2))).clamp(0, 1)
    b[1, 2] = a[1, 2] * 0.5  # one frame much worse than the others
    metric = PerFrameMetric(PSNR(device="cpu", dtype="float64"), frames=3)
    got = metric.update(tile(a), tile(b))
    mse = (a.double() - b.double()).pow(2).flatten(2).mean(2)  # (N, F)
    expected = (10 * torch.log10(1 / mse)).mean(1)
    assert torch.allclose(got, expected, atol=1e-6)
    whole = PSNR(device="cpu", dtype="float64").update(tile(a), tile(b))
    assert not torch.allclose(got, whole, atol=1e-3)  # not the PSNR of the strip as one image
    plain = metric.update(a[:, 0], b[:, 0])  # not strips: one frame, as before
    assert torch.allclose(plain, 10 * torch.log10(1 / mse[:, 0]), atol=1e-6)


class FirstPixel(Metric):
    """Stand-in metric: the first pixel of a; NaN where it is exactly 0 (no face)."""

    def update(self, a, b):
        v = a[:, 0, 0, 0].double()
        return torch.where(v == 0, math.nan, v)


def test_per_frame_mean_leaves_out_frames_without_a_value():
    frames = torch.full((2, 3, 1, 2, 2), 0.5)
    frames[0, 0, 0, 0, 0], frames[0, 1, 0, 0, 0] = 0.2, 0.0  # image 0: 0.2, NaN, 0.5
    frames[1, :, 0, 0, 0] = 0.0  # image 1: no frame has a value
    got = PerFrameMetric(FirstPixel(), frames=3).update(tile(frames), tile(frames))
    assert got[0].item() == pytest.approx(0.35)
    assert math.isnan(got[1].item())


# -- Silencer-I on the tiny talking head -----------------------------------------------------------


@pytest.fixture(scope="module")
def x(portraits64):
    """Two 8-bit portraits at 32 px (what a dataset gives)."""
    return release(F.interpolate(portraits64[:2], size=(32, 32), mode="bilinear",
                                 antialias=True, align_corners=False))


@pytest.fixture(scope="module")
def clips():
    return [read_wav(sample_audio_path())] * 2


def test_silencer_lowers_its_objective_below_clean_and_noise_within_budget(
        x, clips, flipped, monkeypatch):
    monkeypatch.setattr(NoiseStreams, "frozen", True)
    defense = SilencerI(model="tiny/talking-head", iterations=8, frames=2, audio_dropout=0.0,
                        dtype="fp32", device="cpu")
    x_adv = release(defense.protect(x, SEEDS, audio=clips))
    assert (x_adv - x).abs().max() <= 16 / 255 + 1e-6

    def objective(v):
        with torch.no_grad():
            return defense.objective(v, clips, NoiseStreams(SEEDS, torch.device("cpu"),
                                                            defense.name))

    u = torch.rand(x.shape, generator=generator_for(99)) * 2 - 1
    noisy = release((x + u * 16 / 255).clamp(0, 1))
    attacked, clean, noise = objective(x_adv), objective(x), objective(noisy)
    lowered = bool((attacked < clean).all() and (attacked < noise).all())
    assert lowered != flipped, (attacked, clean, noise)


def test_the_generator_makes_a_strip_that_follows_the_audio(x, clips, tmp_path):
    write_wav(tmp_path / "low.wav", tone(150))
    write_wav(tmp_path / "high.wav", tone(1800))
    low, high = read_wav(tmp_path / "low.wav"), read_wav(tmp_path / "high.wav")
    generator = TalkingHeadGenerator(model="tiny/talking-head", frames=3, steps=2,
                                     dtype="fp32", device="cpu", max_batch=4)
    y = generator.edit(x, SEEDS, audio=[low, low])
    assert y.shape == (2, 3, 32, 96)
    again = generator.edit(x[:1], SEEDS[:1], audio=[low])  # paired noise: batch-independent
    assert torch.allclose(again[0], y[0], atol=1e-4)
    other = generator.edit(x[:1], SEEDS[:1], audio=[high])
    assert (other[0] - y[0]).abs().mean() > 1e-3  # the audio drives the frames, 10x noise


# -- audio routing through a job -------------------------------------------------------------------


def test_each_image_gets_its_own_clip_and_a_changed_clip_recomputes_only_its_image(
        workdir, portraits64, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 shared cores: one thread each is faster
    images, clips = workdir / "images", workdir / "clips"
    images.mkdir()
    clips.mkdir()
    for name, xi in zip(("a", "b"), portraits64[:2]):
        to_pil(F.interpolate(xi[None], size=(32, 32), mode="bilinear", antialias=True)[0]
               .clamp(0, 1)).save(images / f"{name}.png")
    write_wav(clips / "a.wav", tone(200))
    write_wav(clips / "b.wav", tone(900))
    args = ["run", "experiment=tiny", "defense=silencer_i", "generator=talking_head",
            "transform=identity", "dataset=folder", f"dataset.root={images}",
            f"dataset.audio={clips}", "dataset.resolution=32", "defense.iterations=2",
            "generator.frames=2", "generator.steps=2", "metric=[psnr]",
            "pairs=[protection]", "device=cpu", "progress=false"]

    def run(out: str) -> tuple[dict, dict]:
        bench(*args, f"hydra.run.dir={out}", cwd=workdir)
        stats = json.loads((workdir / out / "stats.json").read_text())["stages"]
        with open(workdir / out / "images.csv") as f:
            made = {(r["image_id"], r["image"]): r for r in csv.DictReader(f)}
        return stats, made

    stats, made = run("first")
    assert stats["protect"]["computed"] == 2 and stats["generate"]["computed"] == 4
    cache = Path(os.environ["BENCH_CACHE"])
    for image_id in ("a", "b"):
        expected = f"audio:{read_wav(clips / f'{image_id}.wav').key}"
        for image, stage in (("x_adv", "protect"), ("g_x", "generate"), ("g_adv", "generate")):
            key = made[(image_id, image)]["key"]
            sidecar = json.loads((cache / stage / key[:2] / f"{key}.json").read_text())
            assert expected in sidecar["inputs"], (image_id, image)
    with open(workdir / "first" / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["image_id"] for r in rows} == {"a", "b"}

    write_wav(clips / "b.wav", tone(400))
    stats, _ = run("second")
    assert stats["protect"]["computed"] == 1 and stats["protect"]["cached"] == 1
    assert stats["generate"]["computed"] == 2 and stats["generate"]["cached"] == 2


@pytest.mark.weights
def test_hallo_generates_frames_from_a_local_checkout(x, clips):
    root = os.environ.get("BENCH_HALLO_ROOT")
    if not root:
        pytest.skip("needs a Hallo checkout with its pretrained_models (BENCH_HALLO_ROOT)")
    generator = TalkingHeadGenerator(model="hallo", hallo_root=root, frames=2, steps=4)
    y = generator.edit(x[:1], SEEDS[:1], audio=clips[:1])
    assert y.shape == (1, 3, 32, 64) and y.std() > 0.01


def test_weights_check_reports_hallo_by_its_checkout(monkeypatch, tmp_path):
    """`bench weights check` looks for Hallo where it lives (BENCH_HALLO_ROOT), not in the
    Hugging Face cache."""
    from benchmark.models.hub import local_status
    from benchmark.models.talking_head import HALLO_FILES

    monkeypatch.delenv("BENCH_HALLO_ROOT", raising=False)
    status, detail = local_status("hallo")
    assert status == "missing" and "set BENCH_HALLO_ROOT" in detail
    checkout = tmp_path / "hallo"
    (checkout / "hallo" / "models").mkdir(parents=True)
    (checkout / "hallo" / "models" / "unet_3d.py").touch()
    monkeypatch.setenv("BENCH_HALLO_ROOT", str(checkout))
    status, detail = local_status("hallo")
    assert status == "incomplete" and "weights are incomplete" in detail
    for relative in HALLO_FILES.values():
        (checkout / "pretrained_models" / relative).parent.mkdir(parents=True, exist_ok=True)
        (checkout / "pretrained_models" / relative).touch()
    assert local_status("hallo") == (
        "present", f"checkout {checkout}, weights {checkout / 'pretrained_models'}")
